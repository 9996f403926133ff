//! `containerd-shim-berth-v2`: berth's shim v2 for runc containers.

fn main() -> std::process::ExitCode {
    berth_shim::main()
}
