//! Smoke tests proving the test bed's CQL tier is real: Cassandra with
//! authentication and authorization on, reached through the `scylla` driver the
//! store will use.

use lotus_follower_e2e::{TestBed, TestKeyspace, TestRole};
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

#[tokio::test]
async fn rows_round_trip_and_a_select_only_role_cannot_write() -> anyhow::Result<()> {
    let bed = TestBed::from_env()?;
    bed.run(async {
        let admin = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&admin, "round_trip").await?;
        let table = format!("{}.blocks", keyspace.name);
        admin
            .query_unpaged(
                format!("CREATE TABLE {table} (key blob PRIMARY KEY, data blob)"),
                (),
            )
            .await?;

        let rows: Vec<(Vec<u8>, Vec<u8>)> = (0u8..16)
            .map(|i| (vec![0x01, 0x71, i], vec![i; usize::from(i) * 64 + 1]))
            .collect();
        let insert = admin
            .prepare(format!("INSERT INTO {table} (key, data) VALUES (?, ?)"))
            .await?;
        for row in &rows {
            admin.execute_unpaged(&insert, row).await?;
        }
        let mut read = select_all(&admin, &table).await?;
        read.sort();
        assert_eq!(read, rows);
        println!(
            "CQL round trip: {} rows written and read back from {table}",
            rows.len()
        );

        // A role granted only SELECT reads the rows and is refused a write.
        let reader = TestRole::create(&admin, "reader").await?;
        admin
            .query_unpaged(
                format!(
                    "GRANT SELECT ON KEYSPACE {} TO {}",
                    keyspace.name, reader.name
                ),
                (),
            )
            .await?;
        let session = bed.cql_session_as(&reader.name, &reader.password).await?;
        assert_eq!(select_all(&session, &table).await?.len(), rows.len());
        let write = session
            .query_unpaged(
                format!("INSERT INTO {table} (key, data) VALUES (0x00, 0x00)"),
                (),
            )
            .await;
        match write {
            Err(ExecutionError::LastAttemptError(RequestAttemptError::DbError(
                DbError::Unauthorized,
                message,
            ))) => {
                println!(
                    "write as SELECT-only role {} refused: {message}",
                    reader.name
                )
            }
            other => anyhow::bail!("a SELECT-only role's write was not refused: {other:?}"),
        }
        assert_eq!(
            select_all(&admin, &table).await?.len(),
            rows.len(),
            "the refused write left nothing"
        );

        reader.drop(&admin).await?;
        keyspace.drop(&admin).await
    })
    .await
}

async fn select_all(
    session: &scylla::client::session::Session,
    table: &str,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let result = session
        .query_unpaged(format!("SELECT key, data FROM {table}"), ())
        .await?;
    Ok(result
        .into_rows_result()?
        .rows::<(Vec<u8>, Vec<u8>)>()?
        .collect::<Result<_, _>>()?)
}
