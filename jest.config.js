/**
 * Two projects: `unit` (pure modules, tests beside them under provider/, seconds, no servers) and
 * `integration` (test/, real PostgreSQL servers: run serially, generous timeouts). `npm test` runs both;
 * `npm run test:unit` only the first.
 *
 * A test file that leaves a client, a timer or a child process behind must be fixed, not hidden (find it with
 * `npx jest --runInBand --detectOpenHandles test/x.test.ts`); see forceExit below for the one open case.
 */
const transform = { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.test.json" }] };

module.exports = {
  testTimeout: 300000,
  // Kept for now: passing runs usually exit on their own (2 of 3 whole-suite runs and a run with
  // --detectOpenHandles did; a test failing mid-way with an agent and a writer running did too), but one green
  // whole-suite run on 2026-12-06 stayed alive after "Ran all test suites" with no child process and no socket
  // left (a timer or pipe, file not found yet). Until that is found, CI must not hang on it.
  forceExit: true,
  reporters: ["default", "<rootDir>/test/support/summaryReporter.js"],
  projects: [
    { displayName: "unit", testEnvironment: "node", roots: ["<rootDir>/provider"], testMatch: ["**/*.test.ts"], transform },
    { displayName: "integration", testEnvironment: "node", roots: ["<rootDir>/test"], testMatch: ["**/*.test.ts"], transform },
  ],
};
