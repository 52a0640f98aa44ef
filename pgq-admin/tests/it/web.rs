//! The web console in headless Chromium.
