/**
 * An Azure Database for PostgreSQL Flexible Server (source) moved to a new Flexible Server (target,
 * newer major version). pgferry's Azure component enables logical replication on the source
 * (wal_level, slots, WAL senders — chained, retained on delete — and one restart when a static value
 * changed) and opens its firewall to the target (`…_replrule`), then the migration runs as usual.
 *
 *   pulumi config set azure-native:location westeurope
 *   pulumi config set resourceGroupName rg-shop
 *   pulumi config set sourceServerName pg-shop-13
 *   pulumi config set targetOutboundIp 20.50.1.2      # the target server's outbound address
 *   pulumi config set --secret source postgresql://migrator:…@pg-shop-13.postgres.database.azure.com/shop?sslmode=require
 *   pulumi config set --secret target postgresql://migrator:…@pg-shop-17.postgres.database.azure.com/shop?sslmode=require
 *   pulumi up   ·   pulumi config set cutover true && pulumi up
 */
import * as pulumi from "@pulumi/pulumi";
import { azure, Migration } from "pgferry";

const config = new pulumi.Config();
const prerequisites = new azure.FlexibleServerPrerequisites("shop-source", {
  resourceGroupName: config.require("resourceGroupName"),
  serverName: config.require("sourceServerName"),
  replicationClientIps: [config.require("targetOutboundIp")],
  maxReplicationSlots: 16,
  maxWalSenders: 16,
});

const migration = new Migration("shop", {
  source: config.requireSecret("source"),
  target: config.requireSecret("target"),
  name: "shop",
  jobs: 8,
  freezeWrites: true,
  cutover: config.getBoolean("cutover") ?? false,
}, { dependsOn: [prerequisites] });

export const firewallRules = prerequisites.firewallRuleNames;
export const status = migration.status;
export const lagBytes = migration.lagBytes;
export const downtimeMs = migration.downtimeMs;
