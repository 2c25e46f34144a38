/**
 * pgferry's package entry: the Pulumi resources, the Azure components under `azure`, and the engine
 * under `engine` for programs that drive migrations without Pulumi.
 */
import type * as azureComponents from "./azure";

export { Migration, SchemaSync, ServerParameters, FirewallRule } from "./resources";
export type { MigrationArgs, SchemaSyncArgs, ServerParametersArgs, FirewallRuleArgs, SchemaEntryOutput } from "./resources";
export * as engine from "./engine";

/**
 * Azure Flexible Server components. Loaded on first use: @pulumi/azure-native is an optional peer
 * dependency, needed only by programs that use these.
 */
export declare const azure: typeof azureComponents;
Object.defineProperty(exports, "azure", { enumerable: true, get: () => require("./azure") });
