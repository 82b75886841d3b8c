//! The pure core: the formats, rules and texts every program shares. Nothing here touches the
//! network, the disk, a process or the clock (time is passed in), so all of it is tested with
//! plain unit and property tests, fast.
//!
//! - Naming and formats: [`naming`] (the bucket layout), [`location`], [`source`], [`object`],
//!   [`db_manifest`], [`snapshot_manifest`], [`drill`] (drill records), [`events`] (the result
//!   event schema).
//! - Judgements: [`series`] (what a listing holds), [`freshness`], [`retention`] (the prune plan),
//!   [`incidents`] (the alert state machine), [`alerts`] (what people are told).
//! - The console's actions, checked: [`actions`]; progress figures (rate, time left): [`progress`].
//! - Small things everyone needs: [`units`], [`clock`], [`secret`].

pub mod actions;
pub mod alerts;
pub mod clock;
pub mod db_manifest;
pub mod drill;
pub mod events;
pub mod freshness;
pub mod incidents;
pub mod location;
pub mod naming;
pub mod net;
pub mod object;
pub mod progress;
pub mod retention;
pub mod secret;
pub mod series;
pub mod snapshot_manifest;
pub mod source;
pub mod units;
