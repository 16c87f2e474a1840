// A browser continues at once; link previewers, which run no script, leave the one-time link unused.
document.addEventListener("DOMContentLoaded", () => document.getElementById("signin").submit());
