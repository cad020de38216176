//! The local training and evaluation loops (filled in with the data layer).
