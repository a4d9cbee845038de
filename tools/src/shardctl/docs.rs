//! `shardctl completions SHELL` and `shardctl man --dir DIR`: shell
//! completions and man pages generated from the command-line definitions
//! themselves, so they never drift from what `shardctl` accepts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use super::{exit, Cli};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write shardctl.1 and one page per subcommand into
    /// (for example /usr/local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "shardctl", &mut std::io::stdout());
    Ok(exit::OK)
}

/// Writes the man pages: `shardctl.1`, and `shardctl-<sub>.1` for every
/// subcommand (nested ones joined with `-`).
pub fn man(args: &ManArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("{}: cannot create", args.dir.display()))?;
    let written = write_pages(Cli::command(), &args.dir)?;
    println!("wrote {written} man pages to {}", args.dir.display());
    Ok(exit::OK)
}

fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("{}: cannot write", path.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub = sub.clone().display_name(format!("{name}-{}", sub.get_name())).bin_name(format!(
            "{} {}",
            cmd.get_bin_name().unwrap_or(&name),
            sub.get_name()
        ));
        written += write_pages(sub, dir)?;
    }
    Ok(written)
}
