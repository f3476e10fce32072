//! The `coffre` binary: everything lives in the library; see `coffre --help`.

fn main() -> std::process::ExitCode {
    coffre::cli::main()
}
