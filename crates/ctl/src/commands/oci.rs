//! `berthctl oci spec`: the default OCI runtime spec containerd's client
//! generates for a container with no options, as `ctr oci spec` prints it.

use serde::Serialize as _;

use crate::context::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// See the output of the default OCI spec.
    Spec,
}

pub(crate) fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Spec => {
            let mut spec = berth_spec::generate("", &global.namespace(), Vec::new())
                .map_err(|e| anyhow::anyhow!("failed to generate spec: {e}"))?;
            // berth's default spec carries the default PATH, which
            // containerd's clients add separately (WithDefaultPathEnv, or
            // the image's config): GenerateSpec alone has no env.
            if let Some(p) = spec.process_mut() {
                p.set_env(None);
            }
            // Go's json.MarshalIndent(x, "", "    ").
            let mut out = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(b"    "),
            );
            spec.serialize(&mut ser)?;
            println!("{}", String::from_utf8_lossy(&out));
        }
    }
    Ok(())
}
