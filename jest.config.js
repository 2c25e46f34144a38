/** Integration tests start real PostgreSQL servers: run serially, generous timeouts. */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.test.json" }] },
  testTimeout: 300000,
  // A test that fails midway can leave a child process (an agent) or a connection behind; without this, jest
  // would wait for them forever instead of reporting the failure. Passing runs exit cleanly on their own.
  forceExit: true,
  reporters: ["default", "<rootDir>/test/support/summaryReporter.js"],
};
