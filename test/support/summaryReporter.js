/** Prints the plain closing line CI reads: "jest: N passed, N failed, N skipped". */
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    process.stdout.write(`\njest: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${skipped} skipped\n`);
    // No forceExit: a run that does not end by itself names what holds it (timers included), without holding it itself.
    setTimeout(() => {
      process.stderr.write(`jest: the run ended 10 s ago but the process is still held by: ${process.getActiveResourcesInfo().join(", ")}\n`);
    }, 10000).unref();
  }
}
module.exports = SummaryReporter;
