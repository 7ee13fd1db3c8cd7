// Run by tests/api/dashboard.rs, which starts the server, provisions the tenants and passes
// them in DASH_* variables. Debian's Chromium: Playwright's own browser download is not used.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: '.',
  testMatch: '*.spec.js',
  // One browser at a time: the machine is small and the tests share the server.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 60_000,
  expect: { timeout: 10_000 },
  reporter: [['list']],
  outputDir: process.env.DASH_OUTPUT_DIR || '../../target/playwright',
  use: {
    baseURL: process.env.DASH_BASE_URL,
    viewport: { width: 1280, height: 900 },
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    },
    trace: 'off',
  },
});
