//! The `sc` command. Not built yet: `sc new`, `sc dev` and `sc bench` come with the CLI issue.

fn main() {
    eprintln!(
        "sc: the CLI is not built yet (sc new / sc dev / sc bench are planned); see README.md"
    );
    std::process::exit(2);
}
