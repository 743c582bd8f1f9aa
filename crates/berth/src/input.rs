//! Reading secrets: from a pipe (`--*-stdin`) or a masked prompt when stdin is a
//! terminal. Never from a flag value (shell history, `ps`).

use std::io::{IsTerminal, Read};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::cmd::CliError;

/// Reads all of stdin as one secret, without its trailing newline.
pub fn secret_from_stdin(what: &str) -> Result<SecretString, CliError> {
    let mut buf = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut buf)
        .map_err(|e| CliError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
    let trimmed = buf.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!(
            "the {what} read from stdin is empty"
        )));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Asks for a secret with a masked prompt if stdin is a terminal; otherwise a usage
/// error naming the flag that provides it.
pub fn secret_from_prompt(prompt: &str, flag: &str) -> Result<SecretString, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "no terminal to ask for it: pass {flag} and pipe the value in"
        )));
    }
    let value = Zeroizing::new(
        rpassword::prompt_password(prompt)
            .map_err(|e| CliError::Usage(format!("cannot read from the terminal: {e}")))?,
    );
    if value.is_empty() {
        return Err(CliError::Usage("an empty value was given".into()));
    }
    Ok(SecretString::from(value.to_string()))
}
