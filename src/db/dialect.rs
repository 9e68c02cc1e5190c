//! The few queries whose SQL differs between PostgreSQL and SQLite, one function per need,
//! both arms tested (STYLE "Diesel").
