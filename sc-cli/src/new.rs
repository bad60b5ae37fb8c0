//! `sc new NAME`: a ready app from `templates/app`, embedded in the binary (works offline).

use std::path::{Path, PathBuf};

use clap::Args;

/// Arguments of `sc new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The app's directory; its last component is the crate name (letters, digits, `-`, `_`).
    path: PathBuf,
    /// Use this sc-core directory as the app's path dependency (default: the sc-core of the
    /// checkout `sc` was built from; sc-core is not published on crates.io).
    #[arg(long)]
    sc_core_path: Option<PathBuf>,
}

/// The template, file by file: (path in the new app, contents).
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/app/Cargo.toml.tmpl"),
    ),
    ("README.md", include_str!("../../templates/app/README.md")),
    (".gitignore", include_str!("../../templates/app/gitignore")),
    ("src/lib.rs", include_str!("../../templates/app/src/lib.rs")),
    (
        "src/main.rs",
        include_str!("../../templates/app/src/main.rs"),
    ),
    (
        "tests/chat.rs",
        include_str!("../../templates/app/tests/chat.rs"),
    ),
    (
        "public/index.html",
        include_str!("../../templates/app/public/index.html"),
    ),
    (
        "public/app.js",
        include_str!("../../templates/app/public/app.js"),
    ),
    (
        "public/jsconfig.json",
        include_str!("../../templates/app/public/jsconfig.json"),
    ),
];

/// Why an app could not be created: one sentence each.
#[derive(Debug)]
pub enum NewError {
    BadName(String),
    Exists(PathBuf),
    /// No sc-core at the path given, or the checkout `sc` was built from is gone.
    NoScCore(PathBuf),
    Io(PathBuf, std::io::Error),
}

impl NewError {
    /// The exit code: 2 for a usage error (a bad name), 1 for a valid request that could not be
    /// done (the directory exists, no sc-core to depend on, a file could not be written).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::BadName(_) => 2,
            Self::Exists(_) | Self::NoScCore(_) | Self::Io(..) => 1,
        }
    }
}

impl std::fmt::Display for NewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadName(why) => f.write_str(why),
            Self::Exists(p) => write!(
                f,
                "{} already exists; choose another name or remove it first",
                p.display()
            ),
            Self::NoScCore(p) => write!(
                f,
                "no sc-core at {}: pass --sc-core-path with the path of an sc checkout's sc-core \
                 directory (sc-core is not published on crates.io)",
                p.display()
            ),
            Self::Io(p, e) => write!(f, "cannot write {}: {e}", p.display()),
        }
    }
}

/// Checks a crate name: what Cargo accepts, minus the surprises.
fn check_name(name: &str) -> Result<(), NewError> {
    let bad = |why: String| Err(NewError::BadName(why));
    if name.is_empty() {
        return bad("the app needs a name, e.g. `sc new chat`".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad(format!(
            "{name:?} is not a valid app name: use ASCII letters, digits, `-` and `_`"
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return bad(format!(
            "{name:?} is not a valid app name: it must start with a letter or `_`"
        ));
    }
    const RESERVED: &[&str] = &[
        "test", "self", "super", "crate", "std", "core", "sc_core", "sc-core",
    ];
    if RESERVED.contains(&name) {
        return bad(format!(
            "{name:?} is reserved (it would clash with a crate or keyword); choose another name"
        ));
    }
    Ok(())
}

/// The sc-core dependency line (normal, and with the `testing` feature for tests).
fn sc_core_dependency(path: &Path) -> (String, String) {
    let p = path.display().to_string().replace('\\', "/");
    (
        format!("{{ path = {p:?} }}"),
        format!("{{ path = {p:?}, features = [\"testing\"] }}"),
    )
}

/// Creates the app; returns its directory.
pub fn run(args: NewArgs) -> Result<PathBuf, NewError> {
    let dir = args.path;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    check_name(&name)?;
    if dir.exists() {
        return Err(NewError::Exists(dir));
    }
    let sc_core = args
        .sc_core_path
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../sc-core"));
    let sc_core = match std::fs::canonicalize(&sc_core) {
        Ok(p) if p.join("Cargo.toml").is_file() => p,
        _ => return Err(NewError::NoScCore(sc_core)),
    };
    let (dep, dep_testing) = sc_core_dependency(&sc_core);
    let crate_name = name.replace('-', "_");
    for (path, template) in FILES {
        let text = template
            .replace("{{name}}", &name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sc_core}}", &dep)
            .replace("{{sc_core_testing}}", &dep_testing);
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| NewError::Io(parent.to_owned(), e))?;
        }
        std::fs::write(&target, text).map_err(|e| NewError::Io(target.clone(), e))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_one_sentence() {
        assert!(check_name("chat").is_ok());
        assert!(check_name("my-app_2").is_ok());
        for bad in ["", "9lives", "-x", "a b", "héllo", "test", "sc-core"] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(
                err.ends_with(|c: char| c.is_alphanumeric() || c == '`'),
                "{err}"
            );
        }
    }

    #[test]
    fn templates_link_nowhere_that_does_not_exist() {
        for (path, t) in FILES {
            assert!(
                !t.contains("example.invalid"),
                "{path} links to example.invalid"
            );
        }
    }

    #[test]
    fn templates_have_no_unfilled_placeholders_after_substitution() {
        for (path, t) in FILES {
            let text = t
                .replace("{{name}}", "x")
                .replace("{{crate}}", "x")
                .replace("{{sc_core}}", "\"0.1\"")
                .replace("{{sc_core_testing}}", "\"0.1\"");
            assert!(!text.contains("{{"), "{path} has an unknown placeholder");
        }
    }
}
