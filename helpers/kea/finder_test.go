package kea

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFinderChoosesModeFromSample(t *testing.T) {
	row := "10.16.0.2,58:9c:fc:1d:d4:52,01:58:9c:fc:1d:d4:52,3600,1699997488,1,0,0,ci-0,0,\n"
	sample := []byte(strings.Repeat(row, 100))
	// 'e' never occurs in the sample: anchor on it.
	f := newFinder([]byte("58:9c:fc:0e:00:00"), sample)
	assert.False(t, f.pair)
	assert.Equal(t, 10, f.anchor)
	// Every byte of this MAC is common: check two at once.
	f = newFinder([]byte("58:9c:fc:1d:d4:52"), sample)
	assert.True(t, f.pair)
}

func TestFinderFindsEveryOffsetInBothModes(t *testing.T) {
	needle := []byte("58:9c:fc:0a:0b:0c")
	filler := "58:9c:fc:0a:0b:0d,58:9C:FC:0A:0B:1C;8:9c:fc:0a:0b:0c," // near misses
	for _, pair := range []bool{false, true} {
		sample := []byte(nil) // anchor mode
		if pair {
			sample = bytes.Repeat(needle, 4)
		}
		f := newFinder(needle, sample)
		require.Equal(t, pair, f.pair)
		for off := 0; off < 80; off++ {
			for _, variant := range []string{"58:9c:fc:0a:0b:0c", "58:9C:FC:0A:0B:0C", "58:9c:Fc:0A:0b:0C"} {
				hay := strings.Repeat(filler, 3)[:off] + variant + filler
				t.Run(fmt.Sprintf("pair=%v/%d/%s", pair, off, variant), func(t *testing.T) {
					assert.Equal(t, off, f.index([]byte(hay)))
					assert.Equal(t, -1, f.index([]byte(hay[:off+len(variant)-1])), "cut short")
				})
			}
		}
	}
}
