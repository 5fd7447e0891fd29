//! `kubectl serin`: kubectl runs this binary for `kubectl serin ...` when it is on PATH.

fn main() -> std::process::ExitCode {
    serin::plugin::main()
}
