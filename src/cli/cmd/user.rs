//! `catchd user`: the API's users and their tokens.

use clap::Subcommand;

use crate::auth::{self, Role, User};
use crate::cli::{InputError, StoreArgs, print_stdout};
use crate::store::{Store, Write};

/// `catchd user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and print its new API token.
    Add {
        /// User name (letters, digits and @.+-_; at most 150 characters).
        name: String,
        /// blocker (BHR Blockers), manager (BHR Block Managers), user (BHR Users) or admin.
        #[arg(long)]
        role: Role,
        /// Also set a password for HTTP Basic and the web pages: asked for on a terminal
        /// (without echo), else read from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users.
    List {
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a user a new API token (the old one stops working) and print it.
    Token {
        /// User name.
        name: String,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password for HTTP Basic and the web pages: asked for twice without
    /// echo on a terminal, else read from the first line of stdin.
    Password {
        /// User name.
        name: String,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user (the blocks it made stay).
    Remove {
        /// User name.
        name: String,
        #[allow(missing_docs)] // StoreArgs documents itself; a doc comment would confuse clap.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Django's user name rule: letters, digits and `@.+-_`, 1 to 150 characters.
pub(in crate::cli) fn check_user_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 150
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InputError(format!(
            "`{name}` is not a valid user name (letters, digits and @.+-_, at most 150)"
        ))
        .into())
    }
}

pub(in crate::cli) fn open_store(a: &StoreArgs) -> anyhow::Result<Store> {
    let c = a.load()?;
    Ok(Store::open_for_users(&c.server.db)?)
}

pub(in crate::cli) fn find_user(
    store: &Store,
    name: &str,
    db: &crate::store::Database,
) -> anyhow::Result<User> {
    store
        .user_by_name_blocking(name)?
        .ok_or_else(|| InputError(format!("no user `{name}` in {db}")).into())
}

/// A password: on a terminal, asked for twice without echo; otherwise the first line of
/// stdin, without its line ending.
pub(in crate::cli) fn read_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            return Err(InputError("no password on stdin".into()).into());
        }
        return Ok(pw);
    }
    let first = prompt_hidden(&format!("Password for {name}: "))?;
    if first.is_empty() {
        return Err(InputError("no password given".into()).into());
    }
    let again = prompt_hidden("Again: ")?;
    if again != first {
        return Err(InputError("the passwords differ".into()).into());
    }
    Ok(first)
}

/// Asks on stderr and reads a line from the terminal with echo off (restored after, also
/// when reading fails).
pub(in crate::cli) fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::Write as _;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet)?;
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved)?;
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub(in crate::cli) fn user_cmd(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            role,
            password_stdin,
            store: args,
        } => {
            check_user_name(&name)?;
            let password_hash = if password_stdin {
                Some(auth::hash_password(&read_password(&name)?))
            } else {
                None
            };
            let store = open_store(&args)?;
            if store.user_by_name_blocking(&name)?.is_some() {
                return Err(InputError(format!(
                    "user `{name}` exists (use `catchd user token {name}` for a new token)"
                ))
                .into());
            }
            let token = auth::new_token();
            let user = User {
                id: store.next_user_id_blocking()?,
                name,
                role,
                token_hash: Some(auth::hash_token(&token)),
                password_hash,
            };
            store.commit_blocking(vec![Write::User(user)])?;
            print_stdout(&format!("{token}\n"))
        }
        UserCommand::List { store: args } => {
            let store = open_store(&args)?;
            let users = store.users_blocking()?;
            let width = users.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
            let mut out = format!("{:<width$}  {:<7}  TOKEN  PASSWORD\n", "NAME", "ROLE");
            for u in users {
                out += &format!(
                    "{:<width$}  {:<7}  {:<5}  {}\n",
                    u.name,
                    u.role.as_str(),
                    if u.token_hash.is_some() { "yes" } else { "no" },
                    if u.password_hash.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                );
            }
            print_stdout(&out)
        }
        UserCommand::Token { name, store: args } => {
            let c = args.load()?;
            let store = Store::open_for_users(&c.server.db)?;
            let mut user = find_user(&store, &name, &c.server.db)?;
            let token = auth::new_token();
            user.token_hash = Some(auth::hash_token(&token));
            store.commit_blocking(vec![Write::User(user)])?;
            print_stdout(&format!("{token}\n"))
        }
        UserCommand::Password { name, store: args } => {
            let c = args.load()?;
            let store = Store::open_for_users(&c.server.db)?;
            let mut user = find_user(&store, &name, &c.server.db)?;
            user.password_hash = Some(auth::hash_password(&read_password(&name)?));
            store.commit_blocking(vec![Write::User(user)])?;
            Ok(())
        }
        UserCommand::Remove { name, store: args } => {
            let c = args.load()?;
            let store = Store::open_for_users(&c.server.db)?;
            let user = find_user(&store, &name, &c.server.db)?;
            store.commit_blocking(vec![Write::UserDeleted(user.id)])?;
            Ok(())
        }
    }
}
