//! krr trace format.
