//! What a save of a service takes (the registry flags) and how its answer is
//! shown: shared by `berth service` and its wizard, which both depend on this and
//! not on each other.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use berth_api::time::stamp;
use berth_api::{CreateService, ExitView, HealthView, RegistryView, ServiceView, VolumeInput};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::api::{Answer, ApiFailure};
use super::{CliError, Outcome};

#[derive(clap::Args, Default)]
pub struct RegistryFlags {
    /// The registry URL (host[:port])
    #[arg(long)]
    pub registry_url: Option<String>,
    /// The registry user name
    #[arg(long)]
    pub registry_username: Option<String>,
    /// Read the registry password or token from stdin
    #[arg(long)]
    pub registry_password_stdin: bool,
    /// Save even if the connection test fails
    #[arg(long)]
    pub save_without_verifying: bool,
    /// Take the user name and password for the registry from a Docker config, as
    /// `docker login` left them (`auths`, `credHelpers`, `credsStore`): PATH, or
    /// $DOCKER_CONFIG/config.json, or ~/.docker/config.json
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub from_docker_config: Option<Option<std::path::PathBuf>>,
    /// The credential's kind: basic, ecr, gcp or acr [default: from the registry
    /// host]
    #[arg(long)]
    pub kind: Option<String>,
    /// A Google service account key file (kind gcp, sent as _json_key; checked
    /// before any request)
    #[arg(long, value_name = "PATH")]
    pub gcp_json_key_file: Option<std::path::PathBuf>,
    /// An AWS access key id (kind ecr; its secret is read like a password, from
    /// --registry-password-stdin or a masked prompt); berth mints ECR's 12-hour
    /// tokens from it at each deploy
    #[arg(long)]
    pub aws_access_key_id: Option<String>,
    /// An AWS role of yours for berth to assume (kind ecr, nothing secret to
    /// type): its trust policy names berth's AWS principal and requires the
    /// project's external id (`berth project list` shows it)
    #[arg(long, value_name = "ARN", conflicts_with = "aws_access_key_id")]
    pub aws_role_arn: Option<String>,
    /// The AWS region, when the registry host names none
    #[arg(long)]
    pub aws_region: Option<String>,
}

impl RegistryFlags {
    /// The key file's text, if one was named.
    pub fn gcp_json_key(&self) -> Result<Option<zeroize::Zeroizing<String>>, super::CliError> {
        self.gcp_json_key_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(zeroize::Zeroizing::new)
                    .map_err(|e| {
                        super::CliError::Usage(format!("--gcp-json-key-file {}: {e}", p.display()))
                    })
            })
            .transpose()
    }
}

/// Prints a service the human way.
fn render(v: &ServiceView) {
    println!("name:     {}", v.name);
    println!("image:    {}", v.image);
    println!("status:   {}", v.status);
    let limits = limits(v);
    if !limits.is_empty() {
        println!("limits:   {}", limits.join(", "));
    }
    println!(
        "restarts: {} (policy {}{})",
        v.restarts,
        v.restart_policy,
        last_exit(v.last_exit.as_ref())
    );
    match &v.registry {
        None => println!("registry: none (anonymous pulls)"),
        Some(r) => println!(
            "registry: {} (user {}, password {}, {})",
            r.registry_url,
            r.username,
            if r.password_set { "set" } else { "not set" },
            if r.verified {
                "verified"
            } else {
                "not verified"
            }
        ),
    }
    if let Some(h) = v
        .registry
        .as_ref()
        .and_then(|r: &RegistryView| r.health.as_ref())
    {
        println!("health:   {}", health(h));
    }
    let port = match (v.port, &v.health_path) {
        (Some(p), Some(h)) => format!("{p} (ready: GET {h})"),
        (Some(p), None) => p.to_string(),
        (None, Some(h)) => format!("the image's exposed port (ready: GET {h})"),
        (None, None) => "the image's exposed port, if it has one".into(),
    };
    println!("port:     {port}");
    println!("network:  {}", v.network.as_str());
    for url in &v.urls {
        println!("url:      {url}");
    }
    render_run(v);
}

/// What the service runs with, as set (nothing for what the image decides);
/// secrets by name only.
fn render_run(v: &ServiceView) {
    let label = |i: usize, name: &str| {
        if i == 0 {
            format!("{name}:")
        } else {
            String::new()
        }
    };
    for (i, (name, value)) in v.env.iter().enumerate() {
        println!("{:<9} {name}={}", label(i, "env"), quoted(value));
    }
    for (i, s) in v.secrets.iter().enumerate() {
        let given = match s.given_as.as_str() {
            "file" => format!("file /run/secrets/{}", s.name),
            other => other.to_owned(),
        };
        let at = stamp(&s.updated_at);
        println!("{:<9} {} ({given}, set {at})", label(i, "secrets"), s.name);
    }
    for (name, words) in [("command", &v.command), ("args", &v.args)] {
        if let Some(words) = words {
            let words: Vec<String> = words.iter().map(|w| quoted(w)).collect();
            println!("{:<9} {}", format!("{name}:"), words.join(" "));
        }
    }
    if let Some(vol) = &v.volume {
        println!("volume:   {} ({} MiB)", vol.path, vol.size_mb);
    }
    if let Some(r) = &v.region {
        println!("region:   {r}");
    }
}

/// A word as a POSIX shell would take it back: bare when nothing in it is
/// special, else in single quotes.
fn quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The limits set, by name (in the order of their names), each as the API
/// writes its number.
fn limits(v: &ServiceView) -> Vec<String> {
    let r = &v.resources;
    let number = |n: serde_json::Number| n.to_string();
    [
        ("cpus", r.cpus.and_then(serde_json::Number::from_f64)),
        ("memory_mb", r.memory_mb.map(serde_json::Number::from)),
        ("pids", r.pids.map(serde_json::Number::from)),
    ]
    .into_iter()
    .filter_map(|(name, n)| Some(format!("{name} {}", number(n?))))
    .collect()
}

/// `, last exit code 1 at ...` (or its signal, or a stop nobody saw); nothing
/// before the first exit.
fn last_exit(e: Option<&ExitView>) -> String {
    match e {
        None => String::new(),
        Some(ExitView {
            code: Some(c), at, ..
        }) => format!(", last exit code {c} at {}", stamp(at)),
        Some(ExitView {
            signal: Some(s),
            at,
            ..
        }) => format!(", last killed by signal {s} at {}", stamp(at)),
        Some(e) => format!(", last stopped at {} (exit not seen)", stamp(&e.at)),
    }
}

/// `ok (checked ...)`, or `failing (auth_failed) (checked ...)`.
fn health(h: &HealthView) -> String {
    let code = match h.code.as_str() {
        "ok" => String::new(),
        c => format!(" ({c})"),
    };
    format!("{}{code} (checked {})", h.status, stamp(&h.checked_at))
}

/// A 422 carries the preflight result: show its steps, then fail.
fn refused(f: ApiFailure, json: bool) -> Result<Outcome, CliError> {
    if json {
        f.print_json()?;
    } else if let Some(report) = f.preflight() {
        eprint!("{}", super::preflight::render(report));
        eprintln!("not saved: {}", f.message());
    } else {
        eprintln!("error: {f}");
    }
    Ok(Outcome::Failed)
}

/// The answer to a save: the service, or the refused preflight, or an error.
pub(super) fn saved(
    answer: Result<Answer<ServiceView>, ApiFailure>,
    json: bool,
) -> Result<Outcome, CliError> {
    match answer {
        Ok(v) => done(&v, json),
        Err(f) if f.status == 422 => refused(f, json),
        Err(f) => Err(f.into()),
    }
}

pub(super) fn done(v: &Answer<ServiceView>, json: bool) -> Result<Outcome, CliError> {
    if json {
        v.print_json()?;
    } else {
        render(&v.view);
    }
    Ok(Outcome::Ok)
}

/// What a service runs with, as `service create` and `service set` take it:
/// variables, secrets (their values never from argv), command and args, a volume,
/// a region.
#[derive(clap::Args, Default)]
pub struct RunFlags {
    /// A variable, NAME=VALUE (repeat for several; over --env-file's)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Variables from a file: NAME=VALUE lines (`export ` before NAME
    /// tolerated, one pair of quotes around VALUE taken off); `#` comments and
    /// blank lines skipped
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub secrets: SecretFlags,
    /// The command run, replacing the image's Entrypoint: one word per
    /// --command, in order, words starting with - included (--command /bin/sh
    /// --command -c --command 'echo hi')
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Its arguments, replacing the image's Cmd: one word per --args, in order,
    /// like --command (--args --port --args 8080)
    #[arg(long = "args", value_name = "WORD", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// A persistent volume mounted at PATH, SIZE_MB MiB (writes past it fail),
    /// e.g. /data:1024; kept across deploys, destroyed with the service
    #[arg(long, value_name = "PATH:SIZE_MB", value_parser = volume)]
    pub volume: Option<VolumeInput>,
    /// Run only on servers started with --region R ("" on `service set`
    /// removes it)
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
}

/// How a secret is given to the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretAs {
    /// A variable.
    Env,
    /// The file `/run/secrets/NAME`.
    File,
}

/// A secret named by `--secret` or `--secret-file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretName {
    pub name: String,
    pub given_as: SecretAs,
}

/// `--secret NAME` and `--secret-file NAME`, in the order given on the command
/// line (their values are read in that order). Written by hand, not derived: a
/// derived struct keeps two lists and loses the order between them.
#[derive(Default)]
pub struct SecretFlags {
    pub names: Vec<SecretName>,
}

const SECRET_HELP: &str = "A secret variable NAME (repeat for several); its value is asked \
    for (masked) on a terminal, else read from stdin: all of it, less one trailing newline, \
    for one secret; one line each, in the order given, for several. Never a flag value";
const SECRET_FILE_HELP: &str = "A secret given as the file /run/secrets/NAME (0400) rather \
    than a variable; its value is read like --secret's";

impl clap::Args for SecretFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let arg = |id: &'static str, long: &'static str, help: &'static str| {
            clap::Arg::new(id)
                .long(long)
                .value_name("NAME")
                .action(clap::ArgAction::Append)
                .help(help)
        };
        cmd.arg(arg("secret", "secret", SECRET_HELP)).arg(arg(
            "secret_file",
            "secret-file",
            SECRET_FILE_HELP,
        ))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for SecretFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut named: Vec<(usize, SecretName)> = Vec::new();
        for (id, given_as) in [("secret", SecretAs::Env), ("secret_file", SecretAs::File)] {
            let (Some(names), Some(at)) = (m.get_many::<String>(id), m.indices_of(id)) else {
                continue;
            };
            named.extend(at.zip(names).map(|(i, name)| {
                let name = name.clone();
                (i, SecretName { name, given_as })
            }));
        }
        named.sort_by_key(|(i, _)| *i);
        let names = named.into_iter().map(|(_, n)| n).collect();
        Ok(SecretFlags { names })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// `PATH:SIZE_MB` (the last `:` splits them); the server checks the path.
fn volume(text: &str) -> Result<VolumeInput, String> {
    let (path, size) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not PATH:SIZE_MB, e.g. /data:1024"))?;
    let size_mb = size
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("the size {size:?} is not a whole number of MiB above 0"))?;
    if path.is_empty() {
        return Err(format!(
            "{text:?} has no path: PATH:SIZE_MB, e.g. /data:1024"
        ));
    }
    Ok(VolumeInput {
        path: path.to_owned(),
        size_mb,
    })
}

/// `NAME=VALUE` of `--env`.
fn env_flag(text: &str) -> Result<(String, String), CliError> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(CliError::Usage(format!(
            "--env {:?}: not NAME=VALUE",
            text.split('=').next().unwrap_or_default()
        ))),
    }
}

/// The variables of an env file's text, in order; a line that is not `NAME=VALUE`
/// is an error naming its number (never its text: it may hold a secret).
fn env_lines(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            return Err(i + 1);
        };
        let name = name.trim_end();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(i + 1);
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)));
        out.push((name.to_owned(), unquoted.unwrap_or(value).to_owned()));
    }
    Ok(out)
}

/// The variables given: each `--env-file` in turn, then each `--env` (a later
/// one wins).
pub fn env_given(flags: &RunFlags) -> Result<BTreeMap<String, String>, CliError> {
    let mut env = BTreeMap::new();
    for path in &flags.env_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--env-file {}: {e}", path.display())))?;
        let lines = env_lines(&text).map_err(|n| {
            CliError::Usage(format!(
                "--env-file {}: line {n} is not NAME=VALUE",
                path.display()
            ))
        })?;
        env.extend(lines);
    }
    for pair in &flags.env {
        let (name, value) = env_flag(pair)?;
        env.insert(name, value);
    }
    Ok(env)
}

/// The values of the secrets named, in order: a masked prompt for each on a
/// terminal, else stdin (see [`split_secrets`]).
pub fn secret_values(names: &[SecretName]) -> Result<Vec<SecretString>, CliError> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(n.name.as_str())) {
        return Err(CliError::Usage(format!(
            "the secret {} is named twice",
            twice.name
        )));
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if std::io::stdin().is_terminal() {
        return names
            .iter()
            .map(|n| {
                crate::input::secret_from_prompt(
                    &format!("Value of secret {}: ", n.name),
                    "--secret",
                )
            })
            .collect();
    }
    let mut all = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut all)
        .map_err(|e| CliError::Usage(format!("cannot read the secrets from stdin: {e}")))?;
    split_secrets(&all, names)
}

/// Stdin as the secrets' values: all of it less one trailing newline for one
/// secret; one line each, in order, for several. No value is ever quoted back.
fn split_secrets(all: &str, names: &[SecretName]) -> Result<Vec<SecretString>, CliError> {
    fn chomp(s: &str) -> &str {
        s.strip_suffix("\r\n")
            .or_else(|| s.strip_suffix('\n'))
            .unwrap_or(s)
    }
    let values: Vec<&str> = match names {
        [_] => vec![chomp(all)],
        _ => chomp(all)
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect(),
    };
    let listed = || {
        let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
        names.join(", ")
    };
    if values.len() != names.len() {
        return Err(CliError::Usage(format!(
            "{} secrets ({}) take one line each on stdin, in the order given; it has {}",
            names.len(),
            listed(),
            values.len()
        )));
    }
    names
        .iter()
        .zip(values)
        .map(|(n, v)| match v {
            "" => Err(CliError::Usage(format!(
                "the value of secret {} read from stdin is empty",
                n.name
            ))),
            v => Ok(SecretString::from(v.to_owned())),
        })
        .collect()
}

/// The secrets named with their values, and the names given as files.
pub fn secrets_given(
    flags: &RunFlags,
) -> Result<(BTreeMap<String, SecretString>, Vec<String>), CliError> {
    let names = &flags.secrets.names;
    let values = secret_values(names)?;
    let files = names
        .iter()
        .filter(|n| n.given_as == SecretAs::File)
        .map(|n| n.name.clone())
        .collect();
    let secrets = names.iter().map(|n| n.name.clone()).zip(values).collect();
    Ok((secrets, files))
}

/// A new service's run settings from the flags (secrets read now).
pub fn apply_new(flags: &RunFlags, body: &mut CreateService) -> Result<(), CliError> {
    body.env = env_given(flags)?;
    (body.secrets, body.secret_files) = secrets_given(flags)?;
    body.command = (!flags.command.is_empty()).then(|| flags.command.clone());
    body.args = (!flags.args.is_empty()).then(|| flags.args.clone());
    body.volume = flags.volume.clone();
    body.region = flags.region.clone().filter(|r| !r.is_empty());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use secrecy::ExposeSecret;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunFlags,
    }

    fn parse(args: &[&str]) -> RunFlags {
        Flags::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .run
    }

    #[test]
    fn env_files_read_like_dotenv() {
        type Case<'a> = (&'a str, Result<&'a [(&'a str, &'a str)], usize>);
        let cases: &[Case] = &[
            ("A=1\nB=two words\n", Ok(&[("A", "1"), ("B", "two words")])),
            ("# c\n\n  \nexport A=1\n", Ok(&[("A", "1")])),
            (
                "A=\"q u\"\nB='x'\nC=\"\nD=a=b\nE=\n",
                Ok(&[
                    ("A", "q u"),
                    ("B", "x"),
                    ("C", "\""),
                    ("D", "a=b"),
                    ("E", ""),
                ]),
            ),
            ("A=1\r\nB = 2\r\n", Ok(&[("A", "1"), ("B", "2")])),
            ("A=1\n# x\nsecret-without-equals\n", Err(3)),
            ("=1\n", Err(1)),
            ("A B=1\n", Err(1)),
        ];
        for (text, want) in cases {
            let got = env_lines(text);
            let want = want.map(|w| {
                w.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn volumes_are_path_colon_size() {
        let ok = volume("/data:1024").unwrap();
        assert_eq!((ok.path.as_str(), ok.size_mb), ("/data", 1024));
        assert_eq!(volume("/a:b:5").unwrap().path, "/a:b");
        for bad in [
            "/data",
            "/data:",
            "/data:0",
            "/data:-1",
            "/data:1.5",
            ":10",
            "/data:big",
        ] {
            assert!(volume(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stdin_carries_one_secret_whole_or_one_line_each() {
        let name = |n: &str| SecretName {
            name: n.into(),
            given_as: SecretAs::Env,
        };
        let one = [name("A")];
        let two = [name("A"), name("B")];
        type Case<'a> = (&'a [SecretName], &'a str, Option<&'a [&'a str]>);
        let cases: &[Case] = &[
            (&one, "s3cret\n", Some(&["s3cret"])),
            (&one, "s3cret", Some(&["s3cret"])),
            (&one, "line1\nline2\n\n", Some(&["line1\nline2\n"])),
            (&one, "crlf\r\n", Some(&["crlf"])),
            (&one, "\n", None),
            (&one, "", None),
            (&two, "a\nb\n", Some(&["a", "b"])),
            (&two, "a\r\nb", Some(&["a", "b"])),
            (&two, "a\n", None),
            (&two, "a\nb\nc\n", None),
            (&two, "\nb\n", None),
        ];
        for (names, stdin, want) in cases {
            let got = split_secrets(stdin, names);
            match (got, want) {
                (Ok(v), Some(w)) => {
                    let v: Vec<&str> = v.iter().map(|s| s.expose_secret()).collect();
                    assert_eq!(&v, w, "{stdin:?}");
                }
                (Err(CliError::Usage(m)), None) => {
                    for value in ["a", "b", "c"] {
                        assert!(!m.contains(&format!("{value:?}")), "{m}");
                    }
                }
                (got, _) => panic!("{stdin:?}: {:?}", got.map(|v| v.len())),
            }
        }
    }

    #[test]
    fn flags_keep_their_order_and_take_words_with_dashes() {
        let run = parse(&[
            "--secret-file",
            "TLS",
            "--secret",
            "B",
            "--command",
            "/bin/sh",
            "--command",
            "-c",
            "--secret",
            "A",
            "--args",
            "--port",
            "--args",
            "-1",
        ]);
        let names: Vec<(&str, SecretAs)> = run
            .secrets
            .names
            .iter()
            .map(|n| (n.name.as_str(), n.given_as))
            .collect();
        assert_eq!(
            names,
            [
                ("TLS", SecretAs::File),
                ("B", SecretAs::Env),
                ("A", SecretAs::Env)
            ]
        );
        assert_eq!(run.command, ["/bin/sh", "-c"]);
        assert_eq!(run.args, ["--port", "-1"]);
        assert!(parse(&[]).secrets.names.is_empty());
    }

    #[test]
    fn env_flags_win_over_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.env");
        std::fs::write(&file, "A=file\nB=file\n").unwrap();
        let file = file.to_str().unwrap();
        let run = parse(&["--env-file", file, "--env", "B=flag", "--env", "C=x=y"]);
        let env = env_given(&run).unwrap();
        let want = [("A", "file"), ("B", "flag"), ("C", "x=y")];
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(env, want);
        for bad in ["NOVALUE", "=x"] {
            let run = parse(&["--env", bad]);
            assert!(matches!(env_given(&run), Err(CliError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn words_are_shown_as_a_shell_reads_them() {
        for (word, shown) in [
            ("/bin/sh", "/bin/sh"),
            ("-c", "-c"),
            ("echo hi; exit", "'echo hi; exit'"),
            ("it's", "'it'\\''s'"),
            ("", "''"),
        ] {
            assert_eq!(quoted(word), shown);
        }
    }
}
