use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = tenantry::cli::Cli::parse();
    // One actix System for every command: the server's tenant actors need it, the others
    // simply run on its runtime.
    actix_web::rt::System::new().block_on(tenantry::cli::run(cli))
}
