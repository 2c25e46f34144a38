/**
 * The root Pulumi program: one online migration declared from stack config.
 *
 *   pulumi config set --secret pgferry:source postgresql://…   # and pgferry:target
 *   pulumi up                                                  # starts; returns when streaming
 *   pulumi config set pgferry:cutover true && pulumi up        # cuts over
 *     (with pgferry:reverseReplication true: opens a rollback window;
 *      pulumi config set pgferry:rollbackWindow false && pulumi up ends it)
 *   pulumi refresh                                             # live status in the outputs
 *   pulumi destroy                                             # removes slots etc., never target data
 *
 * Optional preparation, declared before the schema step: a self-managed source (`pgferry:sourceAdmin`:
 * ServerParameters + a `_replrule` FirewallRule per `pgferry:replicationClients` address) or an Azure
 * Flexible Server source (`pgferry:azure`).
 */
import * as pulumi from "@pulumi/pulumi";
import { FlexibleServerPrerequisites } from "../provider/azure";
import { FirewallRule, Migration, SchemaSync, ServerParameters } from "../provider/resources";
import type { MigrationArgs } from "../provider/resources";
import { MIGRATION_INPUTS, SettingSpec } from "../provider/engine/core/optionSpec";

export interface AzureSourceConfig {
  resourceGroupName: string;
  serverName: string;
  subscriptionId?: string;
  replicationClientIps: string[];
  extensions?: string[];
}

/**
 * Every Migration input from its config key `pgferry:<input>` (the spec, provider/engine/core/optionSpec.ts): the
 * required ones as secrets, the others by their kind, unset ones as their default (unless the spec says to leave
 * them unset: plugin, which the root stack has always left unset).
 */
export function migrationInputsFromConfig(config: pulumi.Config): MigrationArgs {
  const inputs: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(MIGRATION_INPUTS as Record<string, SettingSpec>)) {
    if (s.pulumi?.required) { inputs[key] = config.requireSecret(key); continue; }
    const value = s.kind === "boolean" ? config.getBoolean(key) : s.kind === "list" || s.kind === "distribution" ? config.getObject(key)
      : s.kind === "string" ? config.get(key) : config.getNumber(key);
    inputs[key] = value ?? (s.pulumi?.stackDefault === false || s.default === undefined ? undefined
      : Array.isArray(s.default) ? [...s.default] : s.default);
  }
  return inputs as unknown as MigrationArgs;
}

export function declareMigrationStack(config = new pulumi.Config("pgferry")) {
  const inputs = migrationInputsFromConfig(config);
  const { source, target } = inputs;
  const name = inputs.name as string;
  const selection = { name, schemas: inputs.schemas, include: inputs.include, exclude: inputs.exclude, replicaIdentityFull: inputs.replicaIdentityFull };

  const prerequisites: pulumi.Resource[] = [];
  const sourceAdmin = config.getSecret("sourceAdmin");
  if (sourceAdmin) {
    const params = new ServerParameters("source-parameters", { server: sourceAdmin });
    prerequisites.push(params);
    (config.getObject<string[]>("replicationClients") ?? []).forEach((address, n) => {
      prerequisites.push(new FirewallRule(`replication-client-${n + 1}`, {
        server: sourceAdmin, name: `${name}_${n + 1}_replrule`, address: address.includes("/") ? address : `${address}/32`,
        replication: true,
      }, { dependsOn: [params] }));
    });
  }
  const az = config.getObject<AzureSourceConfig>("azure");
  if (az) {
    prerequisites.push(new FlexibleServerPrerequisites("source-azure", {
      resourceGroupName: az.resourceGroupName, serverName: az.serverName, subscriptionId: az.subscriptionId,
      replicationClientIps: az.replicationClientIps, extensions: az.extensions,
    }));
  }

  // Several databases (pgferry:databases / pgferry:allDatabases): the URIs name the servers, and each database's schema is copied by
  // the Migration's own start (docs/databases.md); a SchemaSync would copy the URI's database only.
  const severalDatabases = ((inputs.databases as string[] | undefined) ?? []).length > 0 || inputs.allDatabases === true;
  const schema = severalDatabases ? undefined : new SchemaSync("schema", { source, target, ...selection }, { dependsOn: prerequisites });
  const migration = new Migration("migration", inputs, { dependsOn: schema ? [schema] : prerequisites });

  return { prerequisites, schema, migration };
}
