// libcni-driver runs a CNI configuration through libcni, the library container runtimes and Multus
// link, so tests exercise the plugin exactly as a runtime would.
//
//	libcni-driver add|check|del CONFIG_FILE CONTAINER_ID NETNS IFNAME [capability=value ...]
//
// CONFIG_FILE is a .conf (single plugin) or a .conflist. Plugins are found through CNI_PATH. On
// success ADD prints the result JSON; any failure prints the error and exits 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 5 {
		return fmt.Errorf("usage: libcni-driver add|check|del CONFIG CONTAINER_ID NETNS IFNAME [cap=value ...]")
	}
	verb, file, containerID, netns, ifname := args[0], args[1], args[2], args[3], args[4]
	caps := map[string]interface{}{}
	for _, kv := range args[5:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("capability %q is not key=value", kv)
		}
		caps[k] = v
	}
	// The cache keeps results between ADD and DEL the way a runtime's does; one per config and container.
	cacheDir := filepath.Join(os.TempDir(), "libcni-cache-"+filepath.Base(file)+"-"+containerID)
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), cacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifname, CapabilityArgs: caps}

	var list *libcni.NetworkConfigList
	var err error
	if strings.HasSuffix(file, ".conflist") {
		list, err = libcni.ConfListFromFile(file)
	} else {
		var conf *libcni.NetworkConfig
		conf, err = libcni.ConfFromFile(file)
		if err == nil {
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		return fmt.Errorf("loading %s: %w", file, err)
	}
	ctx := context.Background()
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		out, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Println(string(out))
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err := cni.DelNetworkList(ctx, list, rt)
		if err == nil {
			os.RemoveAll(cacheDir)
		}
		return err
	default:
		return fmt.Errorf("unknown verb %q", verb)
	}
	return nil
}
