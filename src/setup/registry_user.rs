//! `slipway registry-user NAME`: an htpasswd line (bcrypt) for the registry,
//! so that no other tool is needed.

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name `{0}` is invalid: it must be non-empty and hold no `:` or whitespace")]
    BadName(String),
    #[error("no password on standard input: pipe it in, e.g. `echo \"$PASSWORD\" | slipway registry-user NAME`")]
    NoPassword,
    #[error("could not hash the password: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

/// Cost 10, as `htpasswd -B` uses by default.
const COST: u32 = 10;

/// `NAME:$2y$...` for the password (the first line of `input`).
pub fn htpasswd_line(name: &str, input: &str) -> Result<String, UserError> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(UserError::BadName(name.chars().take(64).collect()));
    }
    let password = input.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(UserError::NoPassword);
    }
    let hash = bcrypt::hash_with_result(password, COST)?.format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{name}:{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_verify_and_bad_input_is_refused() {
        let line = htpasswd_line("slipway", "s3cret\n").expect("line");
        let (name, hash) = line.split_once(':').expect("name:hash");
        assert_eq!(name, "slipway");
        assert!(hash.starts_with("$2y$10$"));
        assert!(bcrypt::verify("s3cret", hash).expect("verify"));
        assert!(matches!(
            htpasswd_line("a:b", "x"),
            Err(UserError::BadName(_))
        ));
        assert!(matches!(
            htpasswd_line("a", "\n"),
            Err(UserError::NoPassword)
        ));
    }
}
