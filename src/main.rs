use anyhow::Context;
use confab::{
    auth::password,
    core::{
        config::{Cli, Command, UserCommand},
        crypto::random_password,
        db::Pool,
        error::ApiError,
        types::{Email, Role},
    },
    users::store,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::load()?;
    confab::init_tracing(&cli.config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => actix_web::rt::System::new().block_on(serve(cli.config)),
        Command::Migrate => {
            Pool::connect(&cli.config.database_url(), 1)?.migrate()?;
            println!("migrations applied");
            Ok(())
        }
        Command::Demo { conversations } => demo(&cli.config, conversations),
        Command::User(UserCommand::Create { email, role, company, password, first_name, last_name }) => {
            create_user(&cli.config, email, &role, &company, password, &first_name, &last_name)
        }
    }
}

async fn serve(config: confab::core::config::Config) -> anyhow::Result<()> {
    let bind = config.bind.clone();
    let server = confab::build(config).await?;
    if let Some(b) = &server.bootstrap {
        println!("confab: first start — created company \"Default\" and its admin");
        println!("  admin e-mail:    {}", b.admin_email);
        if let Some(p) = &b.generated_password {
            println!("  admin password:  {p}   (shown once; set CONFAB_ADMIN_PASSWORD to choose it)");
        }
        println!("  console:         {}", b.console_url);
    }
    // The address actually bound (`CONFAB_BIND=127.0.0.1:0` picks a free port): on stdout for
    // whoever started the server, tests included, and in the log.
    let host = bind.rsplit_once(':').map_or(bind.as_str(), |(host, _)| host);
    println!("confab: listening on {host}:{}", server.port);
    tracing::info!(%bind, port = server.port, "confab listening");
    if let Some(port) = server.metrics_port {
        tracing::info!(port, "metrics listening");
    }
    server.run().await?;
    tracing::info!("confab stopped");
    Ok(())
}

/// Bootstraps the database if needed (printing the admin's credentials as `serve` would), then
/// fills the Default company with demo data.
fn demo(config: &confab::core::config::Config, conversations: usize) -> anyhow::Result<()> {
    let db = Pool::connect(&config.database_url(), 2)?;
    db.migrate()?;
    let data_key = confab::core::crypto::DataKey::load(config.secret_key.as_ref(), &config.data_dir)?;
    if let Some(b) = confab::bootstrap::run(&db, config, &data_key)? {
        println!("confab: first start — created company \"Default\" and its admin");
        println!("  admin e-mail:    {}", b.admin_email);
        if let Some(p) = &b.generated_password {
            println!("  admin password:  {p}   (shown once)");
        }
    }
    let company_id = db
        .write_blocking(|c| store::find_company_by_name(c, "Default"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("no company named Default")?;
    let filled = db
        .write_blocking(|c| confab::messaging::demo::fill(c, company_id, conversations))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!("demo: {} conversations, {} messages in company \"Default\"", filled.conversations, filled.messages);
    println!("      now run `confab serve` and open {}", config.console_url());
    Ok(())
}

fn create_user(
    config: &confab::core::config::Config,
    email: String,
    role: &str,
    company: &str,
    password: Option<String>,
    first_name: &str,
    last_name: &str,
) -> anyhow::Result<()> {
    let email = Email::try_from(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let role = Role::parse(role).context("--role")?;
    let generated = password.is_none();
    let password = password.unwrap_or_else(random_password);
    // The password rules of every account (CONTRACT §5), checked before anything is touched.
    password::check_new(&password, Some(&email))
        .map_err(|e| anyhow::anyhow!("--password {}", password::policy_message(&e)))?;
    let hash = password::hash(&password)?;
    let db = Pool::connect(&config.database_url(), 1)?;
    db.migrate()?;
    let user = db
        .write_blocking(|c| {
            let company_id = match company.parse::<i64>() {
                Ok(id) if store::company_exists(c, id)? => id,
                _ => match store::find_company_by_name(c, company)? {
                    Some(id) => id,
                    None => store::insert_company(c, company)?,
                },
            };
            if store::email_in_use_by_staff(c, &email)? {
                return Err(ApiError::conflict("email_taken", "an account with this e-mail already exists"));
            }
            store::create_person(c, company_id, role, first_name, last_name, Some(&hash), Some(&email), None, true)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created {} {} (user {}, company {})", role.as_str(), email.as_str(), user.id, user.company_id);
    if generated {
        println!("password: {password}");
    }
    Ok(())
}
