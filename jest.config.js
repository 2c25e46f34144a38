/**
 * Two projects: `unit` (pure modules, tests beside them under provider/, seconds, no servers) and
 * `integration` (test/, real PostgreSQL servers: run serially, generous timeouts). `npm test` runs both;
 * `npm run test:unit` only the first.
 *
 * A test file that leaves a client, a timer or a child process behind must be fixed, not hidden (find it with
 * `npx jest --runInBand --detectOpenHandles test/x.test.ts`): there is no forceExit. If a run stays alive after its
 * summary, the summary reporter prints what still holds it (process.getActiveResourcesInfo(), which unlike
 * _getActiveHandles() lists timers) 10 s later.
 */
const transform = { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.test.json" }] };

module.exports = {
  testTimeout: 300000,
  reporters: ["default", "<rootDir>/test/support/summaryReporter.js"],
  projects: [
    { displayName: "unit", testEnvironment: "node", roots: ["<rootDir>/provider"], testMatch: ["**/*.test.ts"], transform },
    { displayName: "integration", testEnvironment: "node", roots: ["<rootDir>/test"], testMatch: ["**/*.test.ts"], transform },
  ],
};
