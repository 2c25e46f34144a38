/** Dynamic resources: one per file, each thin over the engine. */
export { Migration } from "./migration";
export type { MigrationArgs } from "./migration";
export { SchemaSync } from "./schemaSync";
export type { SchemaSyncArgs, SchemaEntryOutput } from "./schemaSync";
export { ServerParameters } from "./serverParameters";
export type { ServerParametersArgs } from "./serverParameters";
export { FirewallRule } from "./firewallRule";
export type { FirewallRuleArgs } from "./firewallRule";
