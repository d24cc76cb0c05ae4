//! The `store` setting's PostgreSQL URL: recognising one, and showing it without its
//! password. The URL itself is handed to `tokio-postgres` as written (multi-host lists,
//! `target_session_attrs=read-write` and the rest are its business).

/// Whether `store` names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// Why `store` cannot be used as a PostgreSQL URL, if it cannot (the message does not repeat
/// the URL: the caller shows it redacted).
pub fn check(store: &str) -> Result<(), String> {
    if !is_postgres(store) {
        return Err("is not a postgres:// URL (leave store unset for the embedded log in data_dir)".into());
    }
    store.parse::<tokio_postgres::Config>().map(|_| ()).map_err(|e| format!("is not a PostgreSQL URL: {e}"))
}

/// `url` with any password replaced by `<redacted>`: the one in the user info
/// (`user:secret@host`) and a `password=` parameter.
pub fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return "<redacted>".into();
    };
    let (head, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (info, hosts) = authority.split_at(at);
            match info.find(':') {
                Some(colon) => format!("{}:<redacted>{hosts}", &info[..colon]),
                None => format!("{info}{hosts}"),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{head}{authority}{tail}")
}

/// `url` without its `target_session_attrs`, to tell "no server answers" from "only
/// read-only servers answer".
pub(crate) fn any_session(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> =
                query.split('&').filter(|p| !p.to_ascii_lowercase().starts_with("target_session_attrs=")).collect();
            if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        assert_eq!(
            redacted("postgres://herald:s3cr:et@db1:5432,db2:5433/herald?target_session_attrs=read-write"),
            "postgres://herald:<redacted>@db1:5432,db2:5433/herald?target_session_attrs=read-write"
        );
        assert_eq!(
            redacted("postgresql://herald@db/h?password=hunter2&sslmode=require"),
            "postgresql://herald@db/h?password=<redacted>&sslmode=require"
        );
        assert_eq!(redacted("postgres://db"), "postgres://db");
        assert_eq!(redacted("postgres://u:p@db"), "postgres://u:<redacted>@db");
        assert_eq!(redacted("not a url with a secret"), "<redacted>");
    }

    #[test]
    fn only_postgres_schemes_are_postgres() {
        assert!(is_postgres("postgres://db/h"));
        assert!(is_postgres("postgresql://db/h"));
        assert!(!is_postgres("./herald-data"));
        assert!(!is_postgres("mysql://db"));
    }

    #[test]
    fn check_names_what_is_wrong() {
        assert!(check("postgres://herald@127.0.0.1:5432,127.0.0.1:5433/herald?target_session_attrs=read-write").is_ok());
        assert!(check("./herald-data").unwrap_err().contains("not a postgres:// URL"));
        assert!(check("postgres://h/db?target_session_attrs=sometimes").unwrap_err().contains("not a PostgreSQL URL"));
        assert!(check("postgres://h:notaport/db").unwrap_err().contains("not a PostgreSQL URL"));
    }

    #[test]
    fn any_session_drops_only_the_session_attrs() {
        assert_eq!(any_session("postgres://a,b/h?target_session_attrs=read-write"), "postgres://a,b/h");
        assert_eq!(
            any_session("postgres://a/h?sslmode=disable&target_session_attrs=read-write&connect_timeout=2"),
            "postgres://a/h?sslmode=disable&connect_timeout=2"
        );
        assert_eq!(any_session("postgres://a/h"), "postgres://a/h");
    }
}
