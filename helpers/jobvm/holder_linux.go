package jobvm

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
)

func processStart(pid int) (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return "", errNoProcess
	}
	if err != nil {
		return "", err
	}
	return processStartFromStat(string(data))
}
