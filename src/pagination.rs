//! Keyset pagination: every list is ordered by a UUIDv7 id, and a cursor is the last id seen.
//!
//! A page costs one indexed range scan however deep it is, and rows inserted meanwhile never
//! shift the pages a client is walking through.

use std::fmt::Write as _;

use async_graphql::OutputType;
use async_graphql::connection::{Connection, Edge};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, Order, QueryFilter,
    QueryOrder, QueryResult, QueryTrait, Select,
};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Page size when a client gives no `first`.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// The largest `first` a client may ask for.
pub const MAX_PAGE_SIZE: u64 = 100;

const CURSOR_TAG: &str = "c1:";

/// A validated `first`/`after` pair.
#[derive(Debug, Clone, Copy)]
pub struct PageArgs {
    pub first: u64,
    pub after: Option<Uuid>,
}

impl PageArgs {
    /// Checks `first` (1 to 100) and decodes `after`.
    pub fn new(first: Option<i32>, after: Option<String>) -> Result<Self> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE as i32).contains(&n) => n as u64,
            Some(n) => {
                return Err(Error::bad_input(
                    "first",
                    format!("must be between 1 and {MAX_PAGE_SIZE}, got {n}"),
                ));
            }
        };
        let after = after.as_deref().map(decode_cursor).transpose()?;
        Ok(PageArgs { first, after })
    }
}

/// The opaque cursor of a row with this id.
pub fn encode_cursor(id: impl Into<Uuid>) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}{}", id.into().simple()))
}

fn decode_cursor(cursor: &str) -> Result<Uuid> {
    let invalid = || Error::bad_input("after", "not a cursor from this list");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let id = text.strip_prefix(CURSOR_TAG).ok_or_else(invalid)?;
    Uuid::try_parse(id).map_err(|_| invalid())
}

/// One page of rows and whether more follow.
pub struct Page<M> {
    pub items: Vec<M>,
    pub has_next_page: bool,
}

impl<M> Page<M> {
    /// Turns the page into a GraphQL connection, each row wrapped in its view type.
    pub fn into_connection<N: OutputType, I: Into<Uuid>>(
        self,
        id_of: impl Fn(&M) -> I,
        view: impl Fn(M) -> N,
    ) -> Connection<String, N> {
        let mut connection = Connection::new(false, self.has_next_page);
        connection.edges.extend(
            self.items
                .into_iter()
                .map(|item| Edge::new(encode_cursor(id_of(&item)), view(item))),
        );
        connection
    }
}

/// Fetches one page of `select`, ordered by `id_column` (`Desc` for newest first).
pub async fn fetch<E, C>(
    db: &C,
    select: Select<E>,
    id_column: E::Column,
    order: Order,
    args: PageArgs,
) -> Result<Page<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    fetch_rows(db, select, id_column, order, args, |row| {
        <E::Model as FromQueryResult>::from_query_result(row, "")
    })
    .await
}

/// Fetches one page of `select` as [`fetch`] does, each row read by `read`: for a select of
/// some columns only.
pub async fn fetch_rows<E, C, M>(
    db: &C,
    select: Select<E>,
    id_column: E::Column,
    order: Order,
    args: PageArgs,
    mut read: impl FnMut(&QueryResult) -> std::result::Result<M, DbErr>,
) -> Result<Page<M>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let mut select = select;
    if let Some(after) = args.after {
        select = match order {
            Order::Desc => select.filter(id_column.lt(after)),
            _ => select.filter(id_column.gt(after)),
        };
    }
    let mut statement = select
        .order_by(id_column, order)
        .build(db.get_database_backend());
    // The page size is part of the SQL, not a parameter: PostgreSQL plans a statement with an
    // unknown LIMIT as if it read a tenth of the table, so it would never settle on a reusable
    // plan and would plan every page anew. One statement per page size, and sizes are few.
    write!(statement.sql, " LIMIT {}", args.first + 1).expect("writing to a String");
    let rows = db.query_all_raw(statement).await?;
    let has_next_page = rows.len() as u64 > args.first;
    // Into a list of its final size (a collect through `Result` grows it from empty, moving
    // every item each time), and the row that only tells of a next page is not read.
    let mut items = Vec::with_capacity(rows.len().min(args.first as usize));
    for row in rows.iter().take(args.first as usize) {
        items.push(read(row)?);
    }
    Ok(Page {
        items,
        has_next_page,
    })
}

/// The condition that `column` holds `search` (case-insensitive, as a plain substring: `%`, `_`
/// and backslashes match themselves), for the name searches of lists.
pub fn name_contains(
    column: impl sea_orm::sea_query::IntoColumnRef,
    search: &str,
) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Expr, ExprTrait as _, Func, LikeExpr};
    let pattern = format!(
        "%{}%",
        search
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    Expr::expr(Func::lower(Expr::col(column))).like(LikeExpr::new(pattern).escape('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_must_be_between_1_and_100() {
        assert_eq!(PageArgs::new(None, None).unwrap().first, DEFAULT_PAGE_SIZE);
        assert_eq!(PageArgs::new(Some(1), None).unwrap().first, 1);
        assert_eq!(PageArgs::new(Some(100), None).unwrap().first, 100);
        for bad in [0, -1, 101] {
            let err = PageArgs::new(Some(bad), None).unwrap_err();
            assert!(matches!(err, Error::BadInput { ref field, .. } if field == "first"));
        }
    }

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        let args = PageArgs::new(Some(5), Some(encode_cursor(id))).unwrap();
        assert_eq!(args.after, Some(id));
        assert!(PageArgs::new(None, Some("nope".into())).is_err());
        assert!(PageArgs::new(None, Some(URL_SAFE_NO_PAD.encode("c1:zz"))).is_err());
    }
}
