/** Pure logic, no servers: Endpoints: parsing, labels, redaction, conninfo. */
import { conninfo, parseEndpoint, redact } from "./endpoint";

test("endpoints: parsed, labelled without the password, redacted everywhere", () => {
  const ep = parseEndpoint("postgresql://app:s%3Acret@db.example:6543/shop?sslmode=require", "source");
  expect(ep).toMatchObject({ host: "db.example", port: 6543, user: "app", password: "s:cret", database: "shop", sslmode: "require" });
  expect(ep.label).toBe("source app@db.example:6543/shop");
  expect(redact("failed for s:cret at postgresql://app:s%3Acret@db.example/shop", ep)).toBe("failed for ******** at postgresql://app:********@db.example/shop");
  expect(conninfo(ep)).toBe("host='db.example' port=6543 user='app' dbname='shop' password='s:cret' sslmode=require");
  expect(conninfo(parseEndpoint("postgresql://o'neil:p\\w@h/d", "source"))).toContain("user='o\\'neil' dbname='d' password='p\\\\w'");
  expect(() => parseEndpoint("postgresql://u@h/d?sslmode=sometimes", "target")).toThrow(/sslmode=sometimes/);
});

test("settings as pg_db_role_setting stores them: list settings written as their list, others as one literal", () => {
  const { settingAssignment } = require("./endpoint") as typeof import("./endpoint");
  expect(settingAssignment("search_path", `"$user", public`)).toBe(`"search_path" = "$user", public`);
  expect(settingAssignment("work_mem", "64MB")).toBe(`"work_mem" = '64MB'`);
  expect(settingAssignment("application_name", "it's")).toBe(`"application_name" = 'it''s'`);
});
