// AstroLeads' documented webhook receiver (seeds/000), its two JavaScript blocks copied
// verbatim: "Verify in Node.js" and "Express.js Handler". Do not edit: the point is that
// Herald's `body_format: javascript` satisfies this code as the platform published it.
// (tests/js/seed000.cjs runs it; tests/delivery_javascript.rs checks this copy against the
// seed when ../shared is beside the repository.)

const crypto = require('crypto');

function verifyWebhook(payload, signature, secret) {
    const hmac = crypto.createHmac('sha256', secret);
    const digest = 'sha256=' + hmac.update(payload).digest('hex');
    return crypto.timingSafeEqual(
        Buffer.from(signature),
        Buffer.from(digest)
    );
}

const express = require('express');
const app = express();

app.post('/webhooks/astroleads', express.json(), (req, res) => {
    // Verify signature
    const signature = req.headers['x-astroleads-signature'];
    if (!verifyWebhook(JSON.stringify(req.body), signature, process.env.WEBHOOK_SECRET)) {
        return res.status(401).send('Invalid signature');
    }

    const { event, data } = req.body;

    switch (event) {
        case 'lead.qualified':
            // Send to CRM
            await crm.createContact(data);
            // Notify sales team
            await slack.send(`New qualified lead: ${data.email} (Score: ${data.qualityScore})`);
            break;
        
        case 'email.bounced':
            // Mark as invalid
            await db.updateLead(data.leadId, { status: 'invalid' });
            break;
    }

    res.status(200).send('OK');
});
