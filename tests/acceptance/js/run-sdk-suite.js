// Runs the API test suite that OpenPAI's JavaScript SDK ships in its npm package
// (lib/tests/api_tests/v2/api.v2.spec.js, its cases generated from the SDK's swagger) against a platform.
//
//   PAI_URL=http://127.0.0.1:9186/rest-server PAI_USER=sdk_test PAI_PASSWORD=... PAI_TOKEN=... \
//   PAI_SCHEMA=proto/job-protocol/protocol-v2.schema.json node run-sdk-suite.js report.json
//
// The suite reads its cluster from lib/.tests/clusters.json and its cases from lib/.tests/apiTestCase.json;
// both are given to it through Node's module cache, so nothing under node_modules is written. The SDK's
// swagger `$ref`s the job protocol by URL (no network here): the case generator reads a copy of it whose
// `$ref` points at this repository's schema. The report lists every case with its result.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const Module = require('module');
const Mocha = require('mocha');

const PROTOCOL_URL =
  'https://raw.githubusercontent.com/microsoft/openpai-protocol/master/schemas/v2/schema.yaml#/components/schemas/JobProtocol';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

function provide(file, value) {
  const cached = new Module(file);
  cached.filename = file;
  cached.loaded = true;
  cached.exports = value;
  require.cache[file] = cached;
}

async function main() {
  const reportPath = process.argv[2];
  const lib = path.join(path.dirname(require.resolve('@microsoft/openpai-js-sdk/package.json')), 'lib');
  provide(path.join(lib, '.tests', 'clusters.json'), [
    {
      alias: 'acceptance',
      rest_server_uri: required('PAI_URL'),
      username: required('PAI_USER'),
      password: required('PAI_PASSWORD'),
      token: required('PAI_TOKEN'),
      https: false,
    },
  ]);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pai-sdk-'));
  const schema = JSON.parse(fs.readFileSync(required('PAI_SCHEMA'), 'utf8'));
  delete schema.$schema;
  delete schema.$id;
  const schemaPath = path.join(work, 'protocol-v2.schema.json');
  fs.writeFileSync(schemaPath, JSON.stringify(schema));
  const swagger = fs.readFileSync(path.join(lib, 'src', 'api', 'v2', 'swagger.yaml'), 'utf8');
  if (!swagger.includes(PROTOCOL_URL)) {
    throw new Error("the SDK's swagger no longer references the job protocol by the URL this runner replaces");
  }
  const swaggerPath = path.join(work, 'swagger.yaml');
  fs.writeFileSync(swaggerPath, swagger.split(PROTOCOL_URL).join(schemaPath));

  const argv = process.argv;
  process.argv = [argv[0], 'generator']; // the generator module runs itself on import unless told nothing
  const { ApiTestCaseGenerator } = require(path.join(lib, 'tests', 'common', 'apiTestCaseGenerator.js'));
  process.argv = argv;
  const cases = await new ApiTestCaseGenerator().generate(swaggerPath);
  provide(path.join(lib, '.tests', 'apiTestCase.json'), cases);

  const mocha = new Mocha({ timeout: 120000, reporter: 'spec' });
  mocha.addFile(path.join(lib, 'tests', 'api_tests', 'v2', 'api.v2.spec.js'));
  const results = [];
  await new Promise((resolve) => {
    const runner = mocha.run(resolve);
    runner.on('pass', (test) => results.push({ title: test.fullTitle(), state: 'passed' }));
    runner.on('pending', (test) => results.push({ title: test.fullTitle(), state: 'pending' }));
    runner.on('fail', (test, err) =>
      results.push({
        title: test.fullTitle(),
        state: test.type === 'hook' ? 'hook failed' : 'failed',
        error: String((err && (err.stack || err.message)) || err).slice(0, 2000),
      }),
    );
  });
  fs.writeFileSync(reportPath, JSON.stringify({ cases: results }, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
