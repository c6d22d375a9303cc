// Command gitlab-runner is GitLab Runner, built from upstream's packages at the
// version pinned in go.mod, with one more executor: "bhyve".
//
// Nothing here changes upstream behaviour. The file wires upstream's exported
// commands and executors exactly as a stock build has them, and adds the bhyve
// provider to the registry, so that bumping the gitlab-runner line in go.mod
// stays the whole upgrade.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli"

	"gitlab.com/gitlab-org/gitlab-runner/commands"
	"gitlab.com/gitlab-org/gitlab-runner/commands/fleeting"
	"gitlab.com/gitlab-org/gitlab-runner/commands/helpers"
	"gitlab.com/gitlab-org/gitlab-runner/commands/steps"
	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"
	"gitlab.com/gitlab-org/gitlab-runner/executors/custom"
	"gitlab.com/gitlab-org/gitlab-runner/executors/docker"
	"gitlab.com/gitlab-org/gitlab-runner/executors/docker/autoscaler"
	"gitlab.com/gitlab-org/gitlab-runner/executors/docker/machine"
	"gitlab.com/gitlab-org/gitlab-runner/executors/instance"
	"gitlab.com/gitlab-org/gitlab-runner/executors/kubernetes"
	"gitlab.com/gitlab-org/gitlab-runner/executors/parallels"
	"gitlab.com/gitlab-org/gitlab-runner/executors/shell"
	"gitlab.com/gitlab-org/gitlab-runner/executors/ssh"
	"gitlab.com/gitlab-org/gitlab-runner/executors/virtualbox"
	clihelpers "gitlab.com/gitlab-org/gitlab-runner/helpers/cli"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/fips"
	runnerlog "gitlab.com/gitlab-org/gitlab-runner/log"
	"gitlab.com/gitlab-org/gitlab-runner/network"
	"gitlab.com/gitlab-org/gitlab-runner/router"

	// Upstream registers cache adapters, secret resolvers and shells from init
	// functions; a build without these imports silently loses them.
	_ "gitlab.com/gitlab-org/gitlab-runner/cache/azure"
	_ "gitlab.com/gitlab-org/gitlab-runner/cache/gcs"
	_ "gitlab.com/gitlab-org/gitlab-runner/cache/gcsv2"
	_ "gitlab.com/gitlab-org/gitlab-runner/cache/s3"
	_ "gitlab.com/gitlab-org/gitlab-runner/cache/s3v2"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/secrets/resolvers/aws"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/secrets/resolvers/azure_key_vault"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/secrets/resolvers/gcp_secret_manager"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/secrets/resolvers/gitlab_secrets_manager"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/secrets/resolvers/vault"
	_ "gitlab.com/gitlab-org/gitlab-runner/shells"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/executors/bhyve"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version"
)

func init() {
	// Honour GOMEMLIMIT / cgroup limits the way a stock runner does.
	memlimit.SetGoMemLimitWithEnv()
}

func main() {
	defer exitOnLoggedFatal()

	providers := registry()
	validate(providers)

	fips.Check()
	client, shutdownClient, apiCollector := gitlabClient(providers)
	defer shutdownClient()

	app := cli.NewApp()
	app.Name = filepath.Base(os.Args[0])
	app.Usage = "a GitLab Runner with the bhyve executor"
	app.Version = common.AppVersion.ShortLine()
	app.Authors = []cli.Author{{Name: "gitlab-runner-bhyve", Email: "gitlab-runner-bhyve@users.noreply.gitlab.com"}}
	cli.VersionPrinter = printVersion
	app.Commands = allCommands(client, apiCollector, providers)
	app.CommandNotFound = func(_ *cli.Context, name string) {
		logrus.Fatalln("Command", name, "not found.")
	}

	clihelpers.InitCli()
	clihelpers.LogRuntimePlatform(app)
	clihelpers.SetupCPUProfile(app)
	clihelpers.FixHOME(app)
	clihelpers.WarnOnBool(os.Args)
	warnIfSandbox(app)
	runnerlog.ConfigureLogging(app)

	logrus.Debugln("bhyve executor", version.Version)

	if err := app.Run(os.Args); err != nil {
		logrus.Fatal(err)
	}
}

// exitOnLoggedFatal turns a panic raised by logrus' Panic/Fatal hooks into an
// exit status, as upstream does; every other panic keeps its stack trace.
func exitOnLoggedFatal() {
	r := recover()
	if r == nil {
		return
	}
	if _, logged := r.(*logrus.Entry); logged {
		os.Exit(1)
	}
	panic(r)
}

// printVersion prints upstream's version block (the runner version this build
// is based on, injected at link time) followed by our own version, so a bug
// report always carries both.
func printVersion(c *cli.Context) {
	common.AppVersion.Printer(c)
	fmt.Printf("bhyve executor: %s\n", version.Version)
	if notice := version.SandboxNotice(version.StandIns()); notice != "" {
		fmt.Println(notice)
	}
}

// warnIfSandbox makes a binary linked with the sandbox overlay's stand-in
// modules (ci/README.md) say so at every start. Installed before
// ConfigureLogging, whose hook runs first, so the warning honours the
// configured log format.
func warnIfSandbox(app *cli.App) {
	notice := version.SandboxNotice(version.StandIns())
	if notice == "" {
		return
	}
	next := app.Before
	app.Before = func(c *cli.Context) error {
		logrus.Warn(notice)
		if next != nil {
			return next(c)
		}
		return nil
	}
}

// registry holds every upstream executor plus "bhyve". Upstream validates each
// provider at every process start, helper subcommands included, so no provider
// may touch the host when it is constructed.
func registry() *executors.ProviderRegistry {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	dockerProvider := docker.NewProvider()

	return executors.NewProviderRegistry(map[string]common.ExecutorProvider{
		"shell":                   shell.NewProvider(self),
		"custom":                  custom.NewProvider("gitlab-runner"),
		"instance":                instance.NewProvider("gitlab-runner"),
		"docker":                  dockerProvider,
		"docker-windows":          docker.NewWindowsProvider(),
		"docker-autoscaler":       autoscaler.NewProvider(dockerProvider),
		"docker+machine":          machine.NewProvider(dockerProvider),
		common.ExecutorKubernetes: kubernetes.NewProvider(),
		"ssh":                     ssh.NewProvider(),
		"parallels":               parallels.NewProvider(),
		"virtualbox":              virtualbox.NewProvider(),
		bhyve.ExecutorName:        bhyve.NewProvider(),
	})
}

func validate(providers executors.Providers) {
	for name, provider := range providers.All() {
		if err := common.ValidateExecutorProvider(provider); err != nil {
			panic(fmt.Sprintf("Executor %s cannot be registered: %v", name, err))
		}
	}
}

func gitlabClient(providers executors.Providers) (common.Network, func(), *network.APIRequestsCollector) {
	collector := network.NewAPIRequestsCollector()
	certDir := commands.GetDefaultCertificateDirectory()

	direct := network.NewGitLabClient(
		network.WithAPIRequestsCollector(collector),
		network.WithCertificateDirectory(certDir),
		network.WithExecutorProviderFunc(providers.GetByName),
	)
	routed := router.NewClient(direct, certDir, common.AppVersion.UserAgent())
	return routed, routed.Shutdown, collector
}

// allCommands is every command a stock gitlab-runner binary has: runner
// management, the helper commands that job scripts call back into
// (artifacts, cache, probes), fleeting, steps and the service commands.
func allCommands(n common.Network, collector *network.APIRequestsCollector, providers executors.Providers) []cli.Command {
	runnerManagement := []cli.Command{
		commands.NewListCommand(),
		commands.NewLintCommand(),
		commands.NewRegisterCommand(n, providers),
		commands.NewResetTokenCommand(n),
		commands.NewRunCommand(n, collector, providers),
		commands.NewRunSingleCommand(n, providers),
		commands.NewRunnerWrapperCommand(),
		commands.NewUnregisterCommand(n),
		commands.NewVerifyCommand(n),
	}
	jobHelpers := []cli.Command{
		helpers.NewArtifactsDownloaderCommand(),
		helpers.NewArtifactsUploaderCommand(),
		helpers.NewCacheArchiverCommand(),
		helpers.NewCacheExtractorCommand(),
		helpers.NewCacheInitCommand(),
		helpers.NewHealthCheckCommand(),
		helpers.NewProbeURLCommand(),
		helpers.NewVerifyVersionCommand(),
		helpers.NewProxyExecCommand(),
		helpers.NewReadLogsCommand(),
	}
	all := append(runnerManagement, jobHelpers...)
	all = append(all, fleeting.NewCommand(), steps.NewCommand())
	return append(all, commands.NewServiceCommands()...)
}
