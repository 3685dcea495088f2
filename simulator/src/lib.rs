//! The deterministic simulator (not built yet; see `DESIGN.md` § Simulator).
//!
//! Will run many copies of the real node library in one process on virtual time, with a simulated
//! network and disk that inject faults, checkers outside the code under test, and Caliper-style
//! reports, all reproducible from one seed.
