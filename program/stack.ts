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

export interface AzureSourceConfig {
  resourceGroupName: string;
  serverName: string;
  subscriptionId?: string;
  replicationClientIps: string[];
  extensions?: string[];
}

export function declareMigrationStack(config = new pulumi.Config("pgferry")) {
  const source = config.requireSecret("source");
  const target = config.requireSecret("target");
  const name = config.get("name") ?? "main";
  const selection = {
    name,
    schemas: config.getObject<string[]>("schemas") ?? [],
    include: config.getObject<string[]>("include") ?? [],
    exclude: config.getObject<string[]>("exclude") ?? [],
    replicaIdentityFull: config.getBoolean("replicaIdentityFull") ?? false,
  };

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

  const schema = new SchemaSync("schema", { source, target, ...selection }, { dependsOn: prerequisites });
  const migration = new Migration("migration", {
    source, target, ...selection,
    mode: (config.get("mode") as "subscription" | "stream" | undefined) ?? "subscription",
    plugin: config.get("plugin") as "pgoutput" | "wal2json" | undefined,
    jobs: config.getNumber("jobs") ?? 4,
    unlogged: (config.get("unlogged") as "copy" | "skip" | undefined) ?? "copy",
    largeObjects: config.getBoolean("largeObjects") ?? true,
    freezeWrites: config.getBoolean("freezeWrites") ?? false,
    cutover: config.getBoolean("cutover") ?? false,
    cutoverTimeoutSec: config.getNumber("cutoverTimeoutSec") ?? 300,
    verify: (config.get("verify") as "counts" | "hashes" | undefined) ?? "counts",
    cutoverGraceSec: config.getNumber("cutoverGraceSec") ?? 5,
    autoReplicationRule: config.getBoolean("autoReplicationRule") ?? false,
    sourceHostForTarget: config.get("sourceHostForTarget"),
    reverseReplication: config.getBoolean("reverseReplication") ?? false,
    rollbackWindow: config.getBoolean("rollbackWindow") ?? true,
  }, { dependsOn: [schema] });

  return { prerequisites, schema, migration };
}
