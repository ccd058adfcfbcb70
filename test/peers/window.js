// Shared by the test peers: the most events seen in any sliding 1000 ms window.
'use strict';

function maxPerSecond(times) {
  const t = [...times].sort((a, b) => a - b);
  let max = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    while (t[i] - t[j] >= 1000) j++;
    max = Math.max(max, i - j + 1);
  }
  return max;
}

module.exports = { maxPerSecond };
