//! build (being written by the lead)
