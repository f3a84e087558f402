//! The `samband` command: parses the command line and calls into the library.

mod cli;

fn main() -> std::process::ExitCode {
    samband::pki::install_crypto_provider();
    cli::main()
}
