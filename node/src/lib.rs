//! One member's node (not built yet; see issue 5 and `DESIGN.md` § Node).
//!
//! Will hold: the node library wiring ledger, overlay, keyshare and the private database, the admin
//! API, and the `blocktorrent` binary (`init`, `run`, `cluster`, `store`, `request`, `fetch`,
//! `status`, `file show`, `chain verify`, `demo`).
