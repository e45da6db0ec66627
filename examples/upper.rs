//! An upper-casing server built on the tcpool library: every message comes back in capitals,
//! in the line ending the client speaks.
//!
//! ```text
//! cargo run --example upper            # listens on 127.0.0.1:8901
//! cargo run --example upper -- 9000    # or on another port
//! nc 127.0.0.1 8901                    # type lines; `quit` ends your session
//! ```
//!
//! Ctrl-C shuts it down gracefully: every client is told `quit`.

use tcpool::server::{Config, Context, Handler, Message, Server, bind};

/// Answers each message with its text in upper case.
struct Upper;

impl Handler for Upper {
    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        let text = String::from_utf8_lossy(message.text).to_uppercase();
        ctx.send_line(&text);
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("the argument is a port number"),
        None => 8901,
    };
    let listener = bind(([127, 0, 0, 1], port).into())?;
    let server = Server::new(listener, Config::default()).handler(Upper);
    let shutdown = server.shutdown();
    ctrlc::set_handler(move || {
        shutdown.trigger();
    })
    .expect("a signal handler");
    let summary = server.run()?;
    println!("{summary}");
    Ok(())
}
