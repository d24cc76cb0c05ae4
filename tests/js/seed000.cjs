// Serves seeds/000's Express handler (tests/js/seed000_handler.js, verbatim) on 127.0.0.1 at
// a port the OS picks, printed as `listening <port>`; then one JSON line per answered request.
// WEBHOOK_SECRET is the secret it verifies with, as the seed's code reads it.
//
// One change is made before running it, because the published code cannot run as written:
// its handler uses `await` inside an arrow function not declared `async`, a SyntaxError in
// every JavaScript engine. The arrow is made `async`; nothing else is touched. The CRM,
// Slack and database clients it calls are stubs that only count the calls.
'use strict';
const fs = require('fs');
const path = require('path');

const published = fs.readFileSync(path.join(__dirname, 'seed000_handler.js'), 'utf8');
const runnable = published.replace('express.json(), (req, res) => {', 'express.json(), async (req, res) => {');
if (runnable === published) {
    throw new Error('the handler no longer has the shape this harness expects');
}
const calls = { crm: 0, slack: 0, db: 0 };
const crm = { createContact: async () => { calls.crm += 1; } };
const slack = { send: async () => { calls.slack += 1; } };
const db = { updateLead: async () => { calls.db += 1; } };

const app = new Function('require', 'process', 'crm', 'slack', 'db', runnable + '\nreturn app;')(
    require, process, crm, slack, db);

const server = app.listen(0, '127.0.0.1', () => {
    console.log('listening ' + server.address().port);
});
server.on('request', (req, res) => {
    res.on('finish', () => {
        console.log(JSON.stringify({ path: req.url, status: res.statusCode, calls }));
    });
});
