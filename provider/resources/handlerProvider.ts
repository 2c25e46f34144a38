/**
 * The dynamic provider every pgferry resource hands to Pulumi: each method only requires the
 * resource's handler module by its published path and calls the function of the same name. Pulumi
 * serializes this object into state (and runs the stored text on refresh and destroy), so what lands
 * there is these few lines plus the path string — no engine code, no credentials — and it keeps
 * working with later pgferry versions as long as the published paths stay.
 */
import * as pulumi from "@pulumi/pulumi";

/** `modulePath`: e.g. "pgferry/dist/provider/resources/migrationHandlers" (exports check/diff/create/read/update/remove). */
export function handlerProvider(modulePath: string): pulumi.dynamic.ResourceProvider {
  return {
    async check(olds: any, news: any) { return require(modulePath).check(olds, news); },
    async diff(id: string, olds: any, news: any) { return require(modulePath).diff(id, olds, news); },
    async create(inputs: any) { return require(modulePath).create(inputs); },
    async read(id: string, props: any) { return require(modulePath).read(id, props); },
    async update(id: string, olds: any, news: any) { return require(modulePath).update(id, olds, news); },
    async delete(id: string, props: any) { return require(modulePath).remove(id, props); },
  };
}
