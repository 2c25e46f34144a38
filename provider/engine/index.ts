/** The Pulumi-free engine: plain async functions over explicit endpoints. */
export * from "./core/errors";
export * from "./core/endpoint";
export * from "./core/lsn";
export * from "./core/options";
export { listTables, CONTROL_SCHEMA } from "./catalog/catalog";
export type { TableInfo, TableSelection } from "./catalog/catalog";
export { preflight } from "./preflight/preflight";
export type { PreflightResult } from "./preflight/preflight";
export { startMigration } from "./start";
export type { StartResult, MigrationEvent } from "./start";
export { migrationStatus } from "./status";
export type { MigrationStatus } from "./status";
export { abortCutover, cutoverMigration, VERIFY_MODES } from "./cutover/cutover";
export type { AbortResult, CutoverOptions, CutoverResult, SessionInfo, VerifyMode } from "./cutover/cutover";
export { schemaDifferences } from "./catalog/drift";
export type { SchemaDifference } from "./catalog/drift";
export { cleanupMigration } from "./cleanup";
export { runAgent } from "./cdc/stream/agent";
export type { AgentOptions, AgentResult } from "./cdc/stream/agent";
export type { CleanupResult } from "./cleanup";
export { verifyMigration } from "./verify/verify";
export type { VerifyOptions, VerifyReport } from "./verify/verify";
export type { CutoverTimings, Phase } from "./state/state";
export { finishRollbackWindow, rollbackMigration, reverseName, updateRollbackState } from "./rollback/rollback";
export type { FinishResult, RollbackOptions, RollbackResult, RollbackWindowStatus } from "./rollback/rollback";
export {
  abortDatabases, agentDatabases, cleanupDatabases, combinedStatus, cutoverDatabases, databaseEndpoint, databasesStatus, memberName, recordedDatabaseSet, serverEndpoints,
  startDatabases, startDatabaseSet, verifyDatabases, wantsDatabases,
} from "./databases";
export type {
  DatabaseSelection, DatabasesCleanupResult, DatabasesCutoverResult, DatabasesStartResult, DatabasesStatus, DatabasesVerifyReport, SkippedDatabase,
} from "./databases";
