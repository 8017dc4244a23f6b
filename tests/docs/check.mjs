// Uses the gateway's /docs page (Swagger UI) in headless Chromium as a person would: steps 1-4
// of tests/docs/run, then a full-page screenshot. tests/docs/run starts the gateway, declares
// the queue and checks the broker; this script only drives the browser.
//
//   node tests/docs/check.mjs --url URL --queue NAME --work-dir DIR --node-dir DIR [--chromium PATH]
//
// The token comes in DOCS_TOKEN. playwright-core is loaded from --node-dir (where npm ci put
// it). Writes DIR/docs.png and a fresh Chromium profile under DIR (removed at the end). Exit
// status: 0 when every step passed, else the number of the step that failed.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
    options: {
        url: { type: 'string' },
        queue: { type: 'string' },
        'work-dir': { type: 'string' },
        'node-dir': { type: 'string' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
    },
});
for (const name of ['url', 'queue', 'work-dir', 'node-dir']) {
    if (!options[name]) {
        console.error(`check.mjs: --${name} is required`);
        process.exit(64);
    }
}
const token = process.env.DOCS_TOKEN;
if (!token) {
    console.error('check.mjs: DOCS_TOKEN is not set');
    process.exit(64);
}
const base = options.url.replace(/\/$/, '');
const origin = new URL(base).origin;
const queue = options.queue;
const workDir = resolve(options['work-dir']);
const { chromium } = createRequire(join(resolve(options['node-dir']), 'package.json'))('playwright-core');

// Every wait is bounded by one of these (milliseconds).
const LAUNCH_TIMEOUT = 60_000;
const LOAD_TIMEOUT = 30_000;
const UI_TIMEOUT = 15_000;

const PUBLISH_PATH = '/exchanges/{exchange}/messages';
const BATCH_TYPE = 'application/vnd.carrot.batch+json';
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

class StepFailure extends Error {}

function check(condition, message) {
    if (!condition) throw new StepFailure(message);
}

// What the browser reported as wrong: page errors, console.error, failed requests and error
// answers from the gateway itself. Each step fails if it added any.
const problems = [];

function watch(page) {
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
        if (message.type() === 'error') problems.push(`console.error: ${message.text()}`);
    });
    page.on('requestfailed', (request) =>
        problems.push(`request failed: ${request.method()} ${request.url()} (${request.failure()?.errorText})`),
    );
    page.on('response', (response) => {
        if (response.status() >= 400 && new URL(response.url()).origin === origin) {
            problems.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
        }
    });
}

let current;
let reported = 0;
async function step(number, title, body) {
    current = number;
    await body();
    const added = problems.slice(reported);
    reported = problems.length;
    check(added.length === 0, `the browser reported:\n  ${added.join('\n  ')}`);
    console.log(`docs: ok     ${number}. ${title}`);
}

function operationsOf(openapi) {
    const operations = [];
    for (const [path, item] of Object.entries(openapi.paths ?? {})) {
        for (const method of HTTP_METHODS) {
            if (item[method]) operations.push({ key: `${method.toUpperCase()} ${path}`, id: item[method].operationId });
        }
    }
    return operations;
}

mkdirSync(workDir, { recursive: true });
const profile = mkdtempSync(join(workDir, 'chromium-profile-'));
let context;
let page;
let openapi;
let status = 0;
try {
    // 1. The page loads from the gateway alone (no CDN), renders the document's operations,
    //    and neither Chromium nor Swagger UI reports an error while doing so.
    await step(1, 'GET /docs renders the operations without errors', async () => {
        context = await chromium.launchPersistentContext(profile, {
            executablePath: options.chromium,
            headless: true,
            timeout: LAUNCH_TIMEOUT,
            viewport: { width: 1280, height: 900 },
            args: [
                '--headless',
                '--no-sandbox',
                '--disable-gpu',
                '--disable-quic',
                '--no-first-run',
                '--disable-background-networking',
                '--disable-component-update',
                '--disable-sync',
            ],
        });
        context.setDefaultTimeout(UI_TIMEOUT);
        page = context.pages()[0] ?? (await context.newPage());
        watch(page);
        const answer = await page.goto(`${base}/docs`, { waitUntil: 'load', timeout: LOAD_TIMEOUT });
        check(answer?.status() === 200, `GET /docs answered ${answer?.status()}`);
        await page.locator('.opblock').first().waitFor({ state: 'visible', timeout: LOAD_TIMEOUT });
        await page.waitForLoadState('networkidle', { timeout: LOAD_TIMEOUT });
        const errors = await page.locator('.swagger-ui .errors-wrapper').allInnerTexts();
        check(errors.length === 0, `Swagger UI shows errors about the document:\n${errors.join('\n')}`);
    });

    // 2. Every operation of /openapi.json (path x method) is on the page, and nothing else is.
    await step(2, 'the page lists every operation of /openapi.json', async () => {
        const answer = await fetch(`${base}/openapi.json`, { signal: AbortSignal.timeout(UI_TIMEOUT) });
        check(answer.ok, `GET /openapi.json answered ${answer.status}`);
        openapi = await answer.json();
        const expected = operationsOf(openapi);
        const rendered = await page.locator('.opblock').evaluateAll((blocks) =>
            blocks.map((block) => ({
                key: `${block.querySelector('.opblock-summary-method')?.textContent.trim()} ${block
                    .querySelector('.opblock-summary-path')
                    ?.getAttribute('data-path')}`,
                id: block.querySelector('.opblock-summary-operation-id')?.textContent.trim(),
            })),
        );
        const shown = new Set(rendered.map((operation) => operation.key));
        const shownIds = new Set(rendered.map((operation) => operation.id));
        const documented = new Set(expected.map((operation) => operation.key));
        const missing = expected.filter((operation) => !shown.has(operation.key) || !shownIds.has(operation.id));
        const extra = [...shown].filter((key) => !documented.has(key));
        check(
            missing.length === 0 && extra.length === 0,
            `the document has ${expected.length} operations, the page shows ${shown.size}` +
                (missing.length ? `\n  missing: ${missing.map((o) => `${o.key} (${o.id})`).join(', ')}` : '') +
                (extra.length ? `\n  not in the document: ${extra.join(', ')}` : ''),
        );
        console.log(`docs:        ${expected.length} operations in the document, all on the page`);
    });

    // 3. The document's bearer scheme gives the page an Authorize button; the token entered
    //    there is accepted (the dialog offers Logout) and the button shows it locked.
    await step(3, 'Authorize takes the token', async () => {
        const schemes = openapi.components?.securitySchemes ?? {};
        const bearer = Object.entries(schemes).find(
            ([, scheme]) => scheme.type === 'http' && scheme.scheme?.toLowerCase() === 'bearer',
        );
        check(
            bearer,
            'the document declares no bearer scheme (components.securitySchemes: ' +
                `${JSON.stringify(schemes)}), so the page has no token to authorize with`,
        );
        const [name] = bearer;
        const button = page.locator('.auth-wrapper button.authorize');
        check((await button.count()) === 1, `the page shows no "Authorize" button although the document declares "${name}"`);
        await button.click();
        const dialog = page.locator('.dialog-ux .modal-ux');
        await dialog.waitFor({ state: 'visible' });
        const form = dialog.locator('.auth-container').filter({ hasText: name });
        await form.locator('input[aria-label="auth-bearer-value"]').fill(token);
        await form.locator('button.authorize').click();
        await form.locator('button', { hasText: 'Logout' }).waitFor({ state: 'visible' });
        await dialog.locator('button.btn-done').first().click();
        await dialog.waitFor({ state: 'hidden' });
        await page.locator('.auth-wrapper button.authorize.locked').waitFor({ state: 'visible' });
    });

    // 4. "Try it out" on the publish operation sends the token and a message to the queue
    //    through the default exchange, and the page shows the gateway's 200 {"routed": true}.
    await step(4, `POST ${PUBLISH_PATH} from the page answers 200 {"routed": true}`, async () => {
        const operation = page
            .locator('.opblock.opblock-post')
            .filter({ has: page.locator(`.opblock-summary-path[data-path="${PUBLISH_PATH}"]`) })
            .first();
        await operation.locator('.opblock-summary').first().click();
        const execute = operation.locator('button.execute');
        const tryItOut = operation.locator('button.try-out__btn');
        await tryItOut.waitFor({ state: 'visible' });
        if (!(await execute.isVisible())) await tryItOut.click();
        await execute.waitFor({ state: 'visible' });
        await operation.locator('tr[data-param-name="exchange"][data-param-in="path"] input').fill('amq.default');
        await operation.locator('tr[data-param-name="routing_key"][data-param-in="query"] input').fill(queue);
        // Raw mode: the first media type the document offers other than the batch type.
        // Swagger UI shows a file input for a binary one, a text area for the others.
        const offered = Object.keys(openapi.paths[PUBLISH_PATH]?.post?.requestBody?.content ?? {});
        const raw = offered.find((type) => type !== BATCH_TYPE);
        check(raw, `the document offers no raw-mode body for POST ${PUBLISH_PATH} (media types: ${offered})`);
        const requestBody = operation.locator('.opblock-section-request-body');
        const mediaType = requestBody.locator('select.content-type');
        if ((await mediaType.count()) > 0) await mediaType.selectOption(raw);
        const message = JSON.stringify({ check: 'docs', queue });
        const file = requestBody.locator('input[type="file"]');
        if ((await file.count()) > 0) {
            await file.setInputFiles({ name: 'message.json', mimeType: raw, buffer: Buffer.from(message) });
        } else {
            await requestBody.locator('textarea').fill(message);
        }
        await execute.click();
        const live = operation.locator('.live-responses-table .response');
        await live.first().waitFor({ state: 'visible' });
        const code = (await live.locator('.response-col_status').first().innerText()).trim();
        const shown = (await live.locator('.response-col_description pre').first().innerText()).trim();
        const curl = await operation.locator('.curl-command').innerText();
        check(code === '200', `the page shows status ${code}, body: ${shown}`);
        let answer;
        try {
            answer = JSON.parse(shown);
        } catch {
            answer = undefined;
        }
        check(answer?.routed === true, `the page shows 200 but not {"routed": true}: ${shown}`);
        check(
            curl.includes(`Bearer ${token}`),
            `the request the page sent carried no "Authorization: Bearer" token:\n${curl}`,
        );
    });
} catch (error) {
    console.error(`docs: FAILED step ${current}: ${error instanceof StepFailure ? error.message : error.stack ?? error}`);
    const unreported = problems.slice(reported);
    if (unreported.length) console.error(`docs: the browser also reported:\n  ${unreported.join('\n  ')}`);
    status = current;
} finally {
    if (page) {
        const screenshot = join(workDir, 'docs.png');
        await page.screenshot({ path: screenshot, fullPage: true, timeout: LOAD_TIMEOUT }).catch((error) => {
            console.error(`docs: no screenshot: ${error.message}`);
        });
    }
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
