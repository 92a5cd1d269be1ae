// The names a Chromium is found by on the PATH, in order; included by the testkit's
// browser driver and by the main crate's build.rs (which compiles the browser tests as
// ignored when none runs), so both look for the same programs.
&["chromium", "chromium-browser", "google-chrome"]
