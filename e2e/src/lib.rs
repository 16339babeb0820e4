//! End-to-end tests of the whole Terarchitect flow
