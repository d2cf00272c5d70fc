//! Users signed in by an OpenID Connect issuer that names them by `sub` keep that subject.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE users ADD COLUMN subject VARCHAR(255)",
    "CREATE UNIQUE INDEX idx_users_subject ON users (subject)",
];
const DOWN: &[&str] = &[
    "DROP INDEX idx_users_subject",
    "ALTER TABLE users DROP COLUMN subject",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, DOWN).await
    }
}
