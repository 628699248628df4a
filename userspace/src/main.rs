//! The `synguard` binary: the command line of [`synguard::cli`].

fn main() -> std::process::ExitCode {
    synguard::cli::main()
}
