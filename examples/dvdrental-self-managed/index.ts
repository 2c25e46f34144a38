/**
 * DVD Rental between two self-managed servers (e.g. PostgreSQL 13 on an old VM → 17 on a new one).
 * The source is prepared by pgferry itself: logical replication settings, and the pg_hba rule that
 * lets the target's subscription connect back to it.
 *
 *   pulumi config set --secret sourceAdmin postgresql://postgres:…@old-vm:5432/postgres
 *   pulumi config set --secret source      postgresql://migrator:…@old-vm:5432/dvdrental
 *   pulumi config set --secret target      postgresql://postgres:…@new-vm:5432/dvdrental
 *   pulumi config set targetAddress 10.0.2.17          # where the target server connects from
 *   pulumi up                                          # ServerParameters, FirewallRule, SchemaSync, Migration (streaming)
 *   pulumi config set cutover true && pulumi up        # freeze, fence, sequences, foreign keys: Completed
 */
import * as pulumi from "@pulumi/pulumi";
import { FirewallRule, Migration, SchemaSync, ServerParameters } from "pgferry";

const config = new pulumi.Config();
const sourceAdmin = config.requireSecret("sourceAdmin");
const source = config.requireSecret("source");
const target = config.requireSecret("target");
const targetAddress = config.require("targetAddress");

const parameters = new ServerParameters("dvdrental-source-parameters", { server: sourceAdmin });
const replicationRule = new FirewallRule("dvdrental-target", {
  server: sourceAdmin,
  address: targetAddress.includes("/") ? targetAddress : `${targetAddress}/32`,
  user: config.get("replicationUser") ?? "migrator",
  database: "dvdrental",
  replication: true,
}, { dependsOn: [parameters] });

const schema = new SchemaSync("dvdrental-schema", { source, target, name: "dvdrental" }, { dependsOn: [parameters, replicationRule] });
const migration = new Migration("dvdrental", {
  source, target, name: "dvdrental", jobs: 4,
  freezeWrites: true,
  cutover: config.getBoolean("cutover") ?? false,
}, { dependsOn: [schema] });

export const status = migration.status;
export const lagBytes = migration.lagBytes;
export const tables = migration.tables;
export const downtimeMs = migration.downtimeMs;
export const pendingRestart = parameters.pendingRestart;
export const replicationRuleName = replicationRule.ruleName;
