/**
 * pgferry's package entry: the Pulumi resources, the Azure components under `azure`, and the engine
 * under `engine` for programs that drive migrations without Pulumi.
 */
export { Migration, SchemaSync, ServerParameters, FirewallRule } from "./resources";
export type { MigrationArgs, SchemaSyncArgs, ServerParametersArgs, FirewallRuleArgs, SchemaEntryOutput } from "./resources";
export * as azure from "./azure";
export * as engine from "./engine";
