//! `pulse migrate`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pulse_store::Store;
use pulse_store::migrations::{self, Topology};

use pulse_app::open;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Print the DDL this build would apply (rendered for the configured cluster, if any) instead of applying it.
    #[arg(long)]
    print_sql: bool,
}

pub async fn run(path: &Path, args: MigrateArgs) -> Result<ExitCode> {
    let config = open::config(path)?;
    if args.print_sql {
        let topology = match config.store.clickhouse.as_ref().and_then(|c| c.cluster.clone()).filter(|c| !c.is_empty())
        {
            Some(name) => Topology::Cluster { name },
            None => Topology::Single,
        };
        let files = std::iter::once(("schema_migrations", migrations::SCHEMA_MIGRATIONS))
            .chain(migrations::MIGRATIONS.iter().map(|m| (m.name, m.sql)));
        for (name, sql) in files {
            println!("-- {name}");
            for statement in migrations::statements(sql) {
                for rendered in migrations::render(&statement, &topology) {
                    println!("{rendered};\n");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = open::store(&config)?;
    let report = store.migrate().await?;
    if report.applied.is_empty() {
        println!("{}: already at schema version {}; nothing to do", store.describe(), report.current_version);
    } else {
        println!("{}: applied {}", store.describe(), report.applied.join(", "));
        println!("now at schema version {}", report.current_version);
    }
    Ok(ExitCode::SUCCESS)
}
