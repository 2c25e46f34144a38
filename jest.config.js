/** Integration tests start real PostgreSQL servers: run serially, generous timeouts. */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.test.json" }] },
  testTimeout: 300000,
  reporters: ["default", "<rootDir>/test/support/summaryReporter.js"],
};
